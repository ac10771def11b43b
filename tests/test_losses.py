"""The loss layer against independent float64 references, torch's fused functions,
Keras's formulas and hand-computed values."""

import math

import pytest
import torch
import torch.nn.functional as F

from xentlab import losses

LOSSES = ("bce", "cce", "sparse_cce", "mse")
ACTS = ("sigmoid", "softmax", "none")
F32_ONE_MINUS_EPS = float(torch.tensor(1 - 1e-7, dtype=torch.float32))  # what Keras clips to in float32


def sample(loss, n=16, c=5, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g) * scale
    labels = torch.randint(0, c, (n,), generator=g)
    if loss == "sparse_cce":
        y = labels
    elif loss == "cce":
        y = torch.softmax(torch.randn(n, c, generator=g), -1)  # soft rows
    else:
        y = torch.rand(n, c, generator=g)  # soft values in [0, 1]
    return z, y


def reference(loss, act, z, y, s=0.0, numerics="stable"):
    """Textbook formulas in float64, written independently of xentlab.losses."""
    z = z.double()
    p = {"sigmoid": lambda t: 1 / (1 + torch.exp(-t)),
         "softmax": lambda t: torch.exp(t) / torch.exp(t).sum(-1, keepdim=True),
         "none": lambda t: t}[act](z)
    lo, hi = (1e-7, F32_ONE_MINUS_EPS) if numerics == "keras" else (0.0, 1.0)
    if numerics == "keras":
        p = p.float().double()  # Keras sees float32 probabilities; 1 - p then loses digits near 1
    c = z.shape[-1]
    if loss == "mse":
        return ((y.double() - p) ** 2).mean(-1)
    if loss == "bce":
        y = y.double() * (1 - s) + s / 2
        p = p.clamp(lo, hi)
        return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean(-1)
    if loss == "sparse_cce":
        y = F.one_hot(y, c).double()
    y = y.double() * (1 - s) + s / c
    q = (p / p.sum(-1, keepdim=True)).clamp(lo, hi)
    return -(y * torch.log(q)).sum(-1)


@pytest.mark.parametrize("numerics", ["stable", "keras"])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_and_activation_matches_float64_reference(loss, act, numerics):
    z, y = sample(loss)
    if numerics == "stable" and act == "none" and loss != "mse":
        with pytest.raises(ValueError, match="needs probabilities.*sigmoid"):
            losses.compute(loss, act, z, y)
        return
    got = losses.compute(loss, act, z, y, numerics=numerics, reduction="none")
    assert got.shape == (16,) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), reference(loss, act, z, y, numerics=numerics), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("numerics", ["stable", "keras"])
@pytest.mark.parametrize("act", ["sigmoid", "softmax"])
@pytest.mark.parametrize("loss", LOSSES)
def test_losses_under_bf16_autocast_are_float32_values_of_the_bf16_outputs(loss, act, numerics):
    """Mixed precision (``trainer.precision=bf16-mixed``) hands the loss bf16 outputs of a
    matrix product: the loss is computed in float32 from them, as the float64 reference of
    the same bf16 values says (bf16 arithmetic is off by 1e-3 to 1e-2; float32's own rounding
    near Keras's clip, as in the float32 test above, stays under 1e-3)."""
    z, y = sample(loss)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = z @ torch.eye(z.shape[-1])  # a matrix product: autocast makes it bf16
        assert outputs.dtype == torch.bfloat16
        value = losses.compute(loss, act, outputs, y, numerics=numerics, reduction="none")
    assert value.dtype == torch.float32
    expected = reference(loss, act, outputs.double(), y, numerics=numerics)
    torch.testing.assert_close(value.double(), expected, rtol=3e-4, atol=1e-5)


def test_single_output_bce_matches_reference():
    z = torch.randn(32, 1) * 4
    y = torch.randint(0, 2, (32, 1)).float()
    torch.testing.assert_close(losses.compute("bce", "sigmoid", z, y, reduction="none").double(),
                               reference("bce", "sigmoid", z, y), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("act", ["sigmoid", "softmax"])
@pytest.mark.parametrize("loss", LOSSES)
def test_stable_mode_is_finite_with_live_gradients_at_1000(loss, act):
    z = torch.tensor([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 999.0]], requires_grad=True)
    y = torch.tensor([1, 2]) if loss == "sparse_cce" else torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    out = losses.compute(loss, act, z, y)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z.grad).all()
    if loss != "mse":  # confident mistakes still pull: no clipping plateau
        assert z.grad.abs().sum() > 0.1


def test_keras_mode_caps_and_kills_gradient_of_confident_mistakes():
    z = torch.tensor([[-40.0]], requires_grad=True)
    keras = losses.compute("bce", "sigmoid", z, torch.ones(1, 1), numerics="keras")
    keras.backward()
    assert keras.item() == pytest.approx(-math.log(1e-7), rel=1e-4)  # 16.118
    assert z.grad.abs().item() == 0.0
    stable = losses.compute("bce", "sigmoid", torch.tensor([[-40.0]]), torch.ones(1, 1))
    assert stable.item() == pytest.approx(40.0, rel=1e-6)
    capped = losses.compute("bce", "sigmoid", torch.tensor([[40.0]]), torch.zeros(1, 1), numerics="keras")
    assert capped.item() == pytest.approx(15.942, abs=1e-3)  # 1 - 1e-7 rounds in float32


def test_keras_cce_renormalises_hand_values():
    # activation none: outputs [1, 1, 2] renormalise to [.25, .25, .5]
    out = losses.compute("cce", "none", torch.tensor([[1.0, 1.0, 2.0]]), torch.tensor([[0.0, 0.0, 1.0]]),
                         numerics="keras")
    assert out.item() == pytest.approx(math.log(2), rel=1e-6)
    sparse = losses.compute("sparse_cce", "none", torch.tensor([[1.0, 1.0, 2.0]]), torch.tensor([0]), numerics="keras")
    assert sparse.item() == pytest.approx(math.log(4), rel=1e-6)
    # sigmoid outputs [.5, .5] renormalise to [.5, .5]
    sig = losses.compute("cce", "sigmoid", torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), numerics="keras")
    assert sig.item() == pytest.approx(math.log(2), rel=1e-6)


def test_matched_pairs_equal_torch_fused_functions():
    torch.manual_seed(0)
    z = torch.randn(64, 7) * 5
    multi_hot = torch.randint(0, 2, (64, 7)).float()
    labels = torch.randint(0, 7, (64,))
    soft = torch.softmax(torch.randn(64, 7), -1)
    torch.testing.assert_close(losses.compute("bce", "sigmoid", z, multi_hot),
                               F.binary_cross_entropy_with_logits(z, multi_hot), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(losses.compute("cce", "softmax", z, soft), F.cross_entropy(z, soft),
                               rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(losses.compute("sparse_cce", "softmax", z, labels), F.cross_entropy(z, labels),
                               rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(losses.compute("sparse_cce", "softmax", z, labels, label_smoothing=0.2),
                               F.cross_entropy(z, labels, label_smoothing=0.2), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(losses.compute("mse", "sigmoid", z, multi_hot),
                               F.mse_loss(torch.sigmoid(z), multi_hot), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("numerics", ["stable", "keras"])
@pytest.mark.parametrize("act", ["sigmoid", "softmax"])
@pytest.mark.parametrize("loss", ["bce", "cce"])
def test_label_smoothing_follows_keras_formulas(loss, act, numerics):
    z, y = sample(loss, seed=3)
    s = 0.1
    got = losses.compute(loss, act, z, y, label_smoothing=s, numerics=numerics, reduction="none")
    c = z.shape[-1]
    smoothed = y * (1 - s) + (s / 2 if loss == "bce" else s / c)  # Keras: BCE y(1-s)+s/2, CCE y(1-s)+s/C
    expected = losses.compute(loss, act, z, smoothed, numerics=numerics, reduction="none")
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got.double(), reference(loss, act, z, y, s=s, numerics=numerics), rtol=1e-5, atol=1e-5)


def test_sparse_label_smoothing_equals_cce_on_smoothed_one_hot():
    z, y = sample("sparse_cce", seed=4)
    one_hot = F.one_hot(y, 5).float()
    for act in ("softmax", "sigmoid"):
        torch.testing.assert_close(losses.compute("sparse_cce", act, z, y, label_smoothing=0.3),
                                   losses.compute("cce", act, z, one_hot, label_smoothing=0.3), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="sparse_cce has no label smoothing with numerics=keras"):
        losses.compute("sparse_cce", "softmax", z, y, label_smoothing=0.1, numerics="keras")
    with pytest.raises(ValueError, match="mse.*no label smoothing"):
        losses.compute("mse", "sigmoid", z, one_hot, label_smoothing=0.1)


def test_reductions_follow_keras_sum_over_n():
    z, y = sample("bce")
    per = losses.compute("bce", "sigmoid", z, y, reduction="none")
    assert losses.compute("bce", "sigmoid", z, y).item() == pytest.approx(per.sum().item() / len(per), rel=1e-6)
    assert losses.compute("bce", "sigmoid", z, y, reduction="sum").item() == pytest.approx(per.sum().item(), rel=1e-6)


def test_sparse_and_one_hot_cce_give_the_same_value():
    z, labels = sample("sparse_cce", seed=5)
    for act in ("softmax", "sigmoid"):
        torch.testing.assert_close(losses.compute("sparse_cce", act, z, labels),
                                   losses.compute("cce", act, z, F.one_hot(labels, 5).float()), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "loss, outputs, targets, match",
    [
        ("sparse_cce", torch.zeros(4, 3), F.one_hot(torch.tensor([0, 1, 2, 0]), 3).float(),
         "one-hot rows belong to loss=bce, cce, mse"),
        ("cce", torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]), "integer labels belong to loss='sparse_cce'"),
        ("mse", torch.zeros(3, 3), torch.tensor([0.0, 1.0, 2.0]), "would broadcast them silently"),
        ("bce", torch.zeros(4, 1), torch.tensor([[0], [1], [1], [0]]), "cast them"),
        ("sparse_cce", torch.zeros(4, 3), torch.tensor([0, 1, 3, 0]), r"0 <= y < 3.*\[0, 3\]"),
        ("sparse_cce", torch.zeros(4, 3), torch.tensor([0, -1, 2, 0]), r"0 <= y < 3"),
        ("bce", torch.zeros(2, 2), torch.tensor([[0.0, 2.0], [1.0, 0.0]]), r"\[0, 1\]"),
    ],
)
def test_bad_targets_name_loss_expected_format_and_what_was_given(loss, outputs, targets, match):
    with pytest.raises(ValueError, match=match) as err:
        losses.compute(loss, "sigmoid", outputs, targets)  # targets are checked whatever the activation
    assert f"loss={loss!r}" in str(err.value) or f"loss='{loss}'" in str(err.value)


def test_unknown_names_list_valid_choices():
    with pytest.raises(ValueError, match="unknown loss 'hinge'; valid choices are: bce, cce, sparse_cce, mse"):
        losses.compute("hinge", "softmax", torch.zeros(1, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="unknown activation 'relu'; valid choices are: sigmoid, softmax, none"):
        losses.compute("bce", "relu", torch.zeros(1, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="unknown numerics"):
        losses.compute("bce", "sigmoid", torch.zeros(1, 2), torch.zeros(1, 2), numerics="fast")
    with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0, 1\)"):
        losses.compute("bce", "sigmoid", torch.zeros(1, 2), torch.zeros(1, 2), label_smoothing=1.0)


def test_encode_targets_turns_task_labels_into_each_loss_format():
    labels = torch.tensor([0, 1, 1])
    assert losses.encode_targets("sparse_cce", labels, 2) is labels
    assert torch.equal(losses.encode_targets("cce", labels, 2), torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]))
    assert torch.equal(losses.encode_targets("bce", labels, 1), torch.tensor([[0.0], [1.0], [1.0]]))
    multi_hot = torch.tensor([[1.0, 0.0, 1.0]])
    assert losses.encode_targets("mse", multi_hot, 3) is multi_hot
    with pytest.raises(ValueError, match="several tags cannot be one integer"):
        losses.encode_targets("sparse_cce", multi_hot, 3)


def test_loss_layer_is_pure_torch():
    import subprocess
    import sys

    code = ("import sys, xentlab.losses; "
            "bad = [m for m in ('pytorch_lightning', 'lightning', 'mlflow', 'hydra') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_registered_loss_documents_its_formula_with_a_runnable_example():
    import doctest

    for spec in losses.LOSSES.values():
        assert ">>> compute(" in type(spec).__doc__, spec.name
    assert doctest.testmod(losses).failed == 0
