"""``task=binary``: "is this handwritten digit odd?" on real MNIST images.

1 output with sigmoid/none, 2 with softmax. Chosen over small tabular sets (breast cancer:
569 rows) because 60,000 examples keep seed-to-seed noise well below the differences
between losses, and the inputs are the same as the multiclass task, so only the output
layer and loss differ.
"""

from __future__ import annotations

from xentlab.tasks import mnist
from xentlab.tasks.base import Split, Splits, task


@task("binary", kind="binary", input_shape=(1, 28, 28), num_classes=2)
def build(task_cfg, data_cfg) -> Splits:
    """MNIST with label 1 for an odd digit, 0 for an even one."""
    s = mnist.build(task_cfg, data_cfg)
    return Splits(*(Split(p.x, p.y % 2) for p in (s.train, s.val, s.test)))
