"""Every activation × loss × task cell: its status, and the behaviour behind it."""

import itertools

import pytest
import torch

from xentlab import compat, losses
from xentlab.compat import IncompatibleCombination, Status

from conftest import ROOT, preset_jobs

CELLS = list(itertools.product(compat.KINDS, compat.ACTIVATIONS, compat.LOSSES))
NUM_CLASSES = {"binary": 2, "multiclass": 10, "multilabel": 10}


def test_table_has_exactly_every_cell():
    assert set(compat.TABLE) == set(CELLS) and len(CELLS) == 36


def num_outputs(kind, act):
    return (2 if act == "softmax" else 1) if kind == "binary" else NUM_CLASSES[kind]


def task_labels(kind, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "multilabel":
        y = (torch.rand(n, 10, generator=g) < 0.25).float()
        y[torch.arange(n), torch.randint(0, 10, (n,), generator=g)] = 1.0
        y[:, :2] = 1.0  # at least two tags true on every example
        return y
    return torch.randint(0, NUM_CLASSES[kind], (n,), generator=g)


@pytest.mark.parametrize("kind, act, loss", CELLS)
def test_invalid_exactly_where_the_loss_cannot_be_computed_or_learnt(kind, act, loss):
    """Invalid cells, derived rather than copied: on the task's own targets the loss raises,
    or it is constant (no gradient at all). Every other cell trains."""
    n_out = num_outputs(kind, act)
    z = torch.randn(64, n_out, requires_grad=True)
    try:
        out = losses.compute(loss, act, z, losses.encode_targets(loss, task_labels(kind), n_out))
        out.backward()
        dead = not torch.isfinite(out) or z.grad.abs().max().item() < 1e-6
    except ValueError:
        dead = True
    c = compat.cell(kind, act, loss)
    assert dead == (c.status is Status.INVALID) and c.reason
    if c.status is Status.INVALID:
        with pytest.raises(IncompatibleCombination) as err:
            compat.check("t", kind, act, loss)
        message = str(err.value)
        assert f"activation={act}" in message and f"loss={loss}" in message and c.reason in message
        assert "Valid choices with loss=" in message
    else:
        assert compat.check("t", kind, act, loss) is c


def task_model_nll(kind, z, labels):
    """Negative log-likelihood of the labels under the task's own probability model."""
    if kind == "multilabel":  # independent yes/no per tag, averaged over tags as Keras does
        return -torch.distributions.Bernoulli(logits=z).log_prob(labels).mean(-1)
    if z.shape[-1] == 1:  # binary, one logit
        return -torch.distributions.Bernoulli(logits=z[:, 0]).log_prob(labels.float())
    return -torch.distributions.Categorical(logits=z).log_prob(labels)


@pytest.mark.parametrize("kind, act, loss", [c for c in CELLS if compat.cell(*c).status is Status.RECOMMENDED])
def test_recommended_cells_are_the_likelihood_of_the_tasks_own_model(kind, act, loss):
    n_out = num_outputs(kind, act)
    z = torch.randn(64, n_out, dtype=torch.float64) * 3
    labels = task_labels(kind)
    got = losses.compute(loss, act, z, losses.encode_targets(loss, labels, n_out), reduction="none")
    torch.testing.assert_close(got, task_model_nll(kind, z, labels))


def test_two_softmax_outputs_make_bce_equal_cce():
    # the reason given for binary softmax + bce
    z, labels = torch.randn(64, 2, dtype=torch.float64) * 3, task_labels("binary")
    one_hot = losses.encode_targets("cce", labels, 2)
    torch.testing.assert_close(losses.compute("bce", "softmax", z, one_hot, reduction="none"),
                               losses.compute("cce", "softmax", z, one_hot, reduction="none"))


def test_single_output_cce_is_constant_with_zero_gradient():
    # why binary sigmoid+cce is invalid: one output renormalised is always 1
    z = torch.randn(32, 1, requires_grad=True)
    out = losses.compute("cce", "sigmoid", z, torch.ones(32, 1))
    out.backward()
    assert out.item() == pytest.approx(0.0, abs=1e-6) and z.grad.abs().max().item() < 1e-6


def test_single_output_sparse_cce_has_label_out_of_range():
    with pytest.raises(ValueError, match="0 <= y < 1"):
        losses.compute("sparse_cce", "sigmoid", torch.zeros(2, 1), torch.tensor([0, 1]))


def test_softmax_cannot_put_two_tags_above_one_half():
    # why multilabel softmax is questionable: however hard it trains, outputs sum to 1
    z = torch.zeros(1, 10, requires_grad=True)
    target = torch.zeros(1, 10)
    target[0, :2] = 1.0
    opt = torch.optim.SGD([z], lr=1.0)
    for _ in range(300):
        opt.zero_grad()
        losses.compute("bce", "softmax", z, target).backward()
        opt.step()
    p = torch.softmax(z, -1)[0]
    assert (p > 0.5).sum() == 0 and p[:2].sum() > 0.9


def test_two_softmax_outputs_bce_equals_cce():
    z = torch.randn(16, 2)
    t = torch.nn.functional.one_hot(torch.randint(0, 2, (16,)), 2).float()
    torch.testing.assert_close(losses.compute("bce", "softmax", z, t), losses.compute("cce", "softmax", z, t))


@pytest.mark.parametrize("kind", compat.KINDS)
@pytest.mark.parametrize("loss", compat.LOSSES)
def test_auto_activation_is_the_natural_choice(kind, loss):
    act = compat.resolve_activation(kind, "auto", loss)
    assert act == {"bce": "sigmoid", "cce": "softmax", "sparse_cce": "softmax"}.get(
        loss, "softmax" if kind == "multiclass" else "sigmoid")
    assert compat.resolve_activation(kind, "none", loss) == "none"


def test_alternatives_name_runnable_cells_only():
    text = compat.alternatives("multilabel", "none", "bce")
    assert "activation=sigmoid (recommended), softmax (questionable)" in text
    assert "with activation=none: loss=mse (questionable)" in text


def test_unknown_names_list_valid_choices():
    with pytest.raises(ValueError, match="unknown loss 'hinge'; valid choices are: bce, cce, sparse_cce, mse"):
        compat.cell("binary", "sigmoid", "hinge")


def test_every_registered_loss_and_activation_is_a_hydra_choice():
    assert {p.stem for p in (ROOT / "conf" / "loss").glob("*.yaml")} == set(losses.LOSSES)
    assert {p.stem for p in (ROOT / "conf" / "activation").glob("*.yaml")} == {*losses.ACTIVATIONS, "auto"}


@pytest.mark.parametrize("preset", ["loss_grid_binary", "loss_grid_mnist", "loss_grid_multilabel"])
def test_grid_presets_sweep_every_registered_activation_and_loss(preset):
    jobs = preset_jobs(preset)
    cells = {tuple(o.split("=")[1] for o in job if o.startswith(("activation=", "loss="))) for job in jobs}
    assert cells == set(itertools.product(losses.ACTIVATIONS, losses.LOSSES))
    assert len(jobs) == 3 * len(cells)  # three seeds each
