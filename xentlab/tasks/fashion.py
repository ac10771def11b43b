"""``task=fashion``: Fashion-MNIST, 10 kinds of clothing in 28×28 grey images, one label each.

The same shape and split sizes as ``task=mnist`` but harder (a small MLP reaches about 88%
where it reaches 97.5% on digits), so the losses and activations spread further apart.
Fetched by torchvision where the internet is reachable, else from Debian's
``dataset-fashion-mnist`` (``xentlab.tasks.idx_files``).
"""

from __future__ import annotations

from xentlab.tasks.base import Splits, task
from xentlab.tasks.idx_files import FASHION_MNIST
from xentlab.tasks.mnist import image_splits

FASHION_MEAN, FASHION_STD = 0.2860, 0.3530  # of the 60,000 training images
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@task("fashion", kind="multiclass", input_shape=(1, 28, 28), num_classes=10, class_names=CLASSES)
def build(task_cfg, data_cfg) -> Splits:
    """Fashion-MNIST; validation is the last ``data.val_size`` training images."""
    return image_splits(task_cfg, data_cfg, FASHION_MNIST, FASHION_MEAN, FASHION_STD)
