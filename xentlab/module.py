"""The LightningModule: K >= 1 networks, each with its own output activation, loss and
optimizer settings (a *member*, logged as its own MLflow run), trained as one model.

A single run is K = 1: its network is called as it is (:class:`Plain`). For K > 1 the
members' parameters are stacked (:class:`Stacked`, ``torch.func.stack_module_state``) and evaluated as
batched matrix products, so small models share each step's fixed cost. Members share no
parameters and Adam and SGD act elementwise, so every member follows exactly the
trajectory it would follow alone: its own initial weights, data order (a generator per
member, ``xentlab.data.MemberData``), loss and learning rate. Members with the same
optimizer settings share a parameter block and an optimizer param group.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Callable, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from xentlab import losses, metric_keys
from xentlab.config import OptimizerName
from xentlab.errors import NonFiniteLoss
from xentlab.metrics import Yardsticks

# Each optimizer (the choice ``optimizer.name``) with the settings a member may set in its own param group.
OPTIMIZERS: dict[OptimizerName, tuple[Callable[..., torch.optim.Optimizer], tuple[str, ...]]] = {
    OptimizerName.adam: (torch.optim.Adam, ("lr", "weight_decay")),
    OptimizerName.sgd: (torch.optim.SGD, ("lr", "momentum", "weight_decay")),
}
# Devices where the optimizer runs torch's fused kernels: one pass over each parameter tensor
# instead of one per elementwise op (most of a stacked model's optimizer time on CPU).
FUSED = ("cpu", "cuda")


@dataclass(frozen=True)
class MemberSettings:
    """What may differ between members of one model; everything else they share."""

    loss: str
    activation: str
    label_smoothing: float = 0.0
    numerics: str = "stable"
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0

    @property
    def optimizer(self) -> dict[str, float]:
        """The optimizer settings (members with equal ones share a param group)."""
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay}


class Plain:
    """One network (K = 1), called as it is; the same small interface as :class:`Stacked`.
    Not a module itself: the network stays the classifier's ``net``, so a single run's
    checkpoint holds it under the names it always had."""

    per_member_batches = False  # its training batches are plain (B, ...) batches

    def __init__(self, net: nn.Module):
        self.net = net
        self.blocks = [(0, 1)]  # (first, end) member of each parameter block
        self.members = [0]  # a single member never leaves: it stops the fit instead

    def __call__(self, x: Tensor, shared: bool = True) -> Tensor:
        return self.net(x if shared else x[0]).unsqueeze(0)

    def parameter_blocks(self) -> list[list[nn.Parameter]]:
        return [list(self.net.parameters())]

    def weights(self) -> list[Tensor]:
        return list(self.net.parameters())

    @torch.no_grad()
    def hold(self, members: Sequence[int], weights: Sequence[Tensor]) -> None:
        for p, w in zip(self.net.parameters(), weights, strict=True):
            p.copy_(w)


# Layers a stacked model applies as they are to ``(K, B, features)`` tensors (elementwise).
ELEMENTWISE = (nn.ReLU, nn.Sigmoid, nn.Tanh)


class Stacked(nn.Module):
    """K > 1 networks of one architecture, their parameters stacked, ``(K, ...)`` each.

    The optimizer sees one parameter block per run of consecutive members with equal optimizer
    settings (one param group each); the blocks are views of one tensor per parameter, which
    the forward pass uses whole, and whose gradient each block takes as views again: one
    product per layer for all K members, no copy of weights or gradients at any step.
    Matrices (linear weights) are stored ``(K, in, out)``, transposed: their gradient x^T·dy
    then lands in the parameter's own layout, where ``(K, out, in)`` costs a transposing copy
    of every weight at every step. A network of ``Flatten``, ``Linear`` and elementwise
    activations (``mlp``) runs as one ``baddbmm`` per layer, as a bare stacked loop would; any
    other (``cnn``) through ``vmap`` + ``functional_call``.
    """

    per_member_batches = True  # its training batches are (K, B, ...): each member's own order

    def __init__(self, nets: Sequence[nn.Module], settings: Sequence[MemberSettings]):
        super().__init__()
        self.blocks: list[tuple[int, int]] = []
        for i, s in enumerate(settings):
            if self.blocks and settings[self.blocks[-1][0]].optimizer == s.optimizer:
                self.blocks[-1] = (self.blocks[-1][0], i + 1)
            else:
                self.blocks.append((i, i + 1))
        if any(True for _ in nets[0].buffers()):
            raise ValueError("members train as one model only for networks without buffers (mlp, cnn)")
        self._names = [n for n, _ in nets[0].named_parameters()]
        self._flip = [p.dim() == 2 for _, p in nets[0].named_parameters()]
        self.full_blocks = list(self.blocks)  # each block's members, by member index
        self.members = list(range(len(settings)))  # the members it holds, in order (fewer once some stopped)
        self.stored = nn.ModuleList()
        for start, stop in self.blocks:
            params, _ = stack_module_state(list(nets[start:stop]))
            stored = [params[n].transpose(1, 2) if flip else params[n] for n, flip in zip(self._names, self._flip)]
            self.stored.append(nn.ParameterList([nn.Parameter(p.detach().contiguous()) for p in stored]))
        # the architecture, kept out of the module tree: functional_call supplies every weight
        self._base = [copy.deepcopy(nets[0]).to("meta")]
        self._chain = self._as_chain(nets[0])
        self._tie()

    def _tie(self) -> None:
        """Make one tensor per parameter of the blocks' values, the blocks views of it, and hand
        its gradient to the blocks after every backward pass."""
        self._whole = []
        for j in range(len(self._names)):
            whole = torch.cat([block[j].detach() for block in self.stored]).requires_grad_()
            for (start, stop), block in zip(self.blocks, self.stored):
                block[j].data = whole.detach()[start:stop]
            whole.register_post_accumulate_grad_hook(functools.partial(self._hand_grad, j=j))
            self._whole.append(whole)

    def _hand_grad(self, whole: Tensor, j: int) -> None:
        for (start, stop), block in zip(self.blocks, self.stored):
            block[j].grad = whole.grad[start:stop]
        whole.grad = None

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._tie()  # a move or cast gives the blocks new tensors: tie them again
        return self

    def _as_chain(self, net: nn.Module) -> list[int | nn.Module] | None:
        """The network as a list of steps: a linear layer's index into the stored parameters
        (weight, then bias), or an elementwise module; None when it has any other layer."""
        if not isinstance(net, nn.Sequential):
            return None
        chain: list[int | nn.Module] = []
        j = 0
        for layer in net:
            if isinstance(layer, nn.Linear) and layer.bias is not None:
                chain.append(j)
                j += 2
            elif isinstance(layer, ELEMENTWISE):
                chain.append(layer)
            elif not (isinstance(layer, nn.Flatten) and layer.start_dim == 1 and layer.end_dim == -1):
                return None
        return chain

    def _one(self, params: tuple[Tensor, ...], x: Tensor) -> Tensor:
        return functional_call(self._base[0], dict(zip(self._names, params)), (x,))

    def forward(self, x: Tensor, shared: bool = True) -> Tensor:
        """Outputs ``(K, B, C)`` for inputs ``(B, ...)`` (shared) or ``(K, B, ...)``."""
        params = self._whole
        if self._chain is None:
            stacked = tuple(p.transpose(1, 2) if flip else p for p, flip in zip(params, self._flip))
            return vmap(self._one, in_dims=(0, None if shared else 0))(stacked, x)
        h = x.flatten(1).expand(len(params[0]), -1, -1) if shared else x.flatten(2)
        for step in self._chain:
            h = torch.baddbmm(params[step + 1].unsqueeze(1), h, params[step]) if isinstance(step, int) else step(h)
        return h

    def parameter_blocks(self) -> list[list[nn.Parameter]]:
        """Each block's parameters (a block whose members all stopped has zero rows)."""
        return [list(b.parameters()) for b in self.stored]

    def weights(self) -> list[Tensor]:
        """One ``(members, ...)`` tensor per parameter: what the forward pass uses."""
        return self._whole

    def hold(self, members: Sequence[int], weights: Sequence[Tensor]) -> None:
        """Hold ``members`` (member indices, ascending) with ``weights`` (one ``(len(members), ...)``
        tensor per parameter): the blocks keep their parameter objects, each with its members' rows."""
        self.members = list(members)
        self.blocks, start = [], 0
        for first, end in self.full_blocks:
            n = sum(first <= i < end for i in self.members)
            self.blocks.append((start, start + n))
            start += n
        for (start, stop), block in zip(self.blocks, self.stored):
            for p, w in zip(block, weights, strict=True):
                p.data = w.detach()[start:stop]
        self._tie()

    def keep(self, members: Sequence[int]) -> list[Tensor]:
        """Drop every member but ``members`` (a subset of :attr:`members`): the stacked tensors shrink
        to their rows, so the forward and backward passes no longer compute the others. Returns each
        block's kept rows, indices into the block as it was (to shrink optimizer state alike)."""
        wanted = set(members)
        rows = torch.tensor([p for p, i in enumerate(self.members) if i in wanted], device=self._whole[0].device)
        local = [rows[(rows >= start) & (rows < stop)] - start for start, stop in self.blocks]
        self.hold([i for i in self.members if i in wanted], [w.detach().index_select(0, rows) for w in self._whole])
        return local


class Selection(nn.Module):
    """Each member's best validation epoch and its weights, kept on the training device.

    After every validation epoch, a member whose monitored yardstick improved (in its declared
    direction) copies its current weights here, masked per member so a stacked model needs no
    host sync; the buffers travel in checkpoints, so a resumed run keeps them, and which
    members stopped. They keep every member, ``(K, ...)`` per parameter, also once the model
    holds fewer (:meth:`Stacked.keep`): a stopped member is tested with its kept weights. With
    ``patience`` a member that has not improved for that many epochs is *stale*. ``best_value``
    stays float64 whatever precision the model is cast to: in bf16 a later, worse value could
    compare as better.
    """

    def __init__(self, nets: Plain | Stacked, k: int, monitor: str, higher: bool, patience: int | None):
        super().__init__()
        self.monitor, self.higher, self.patience = monitor, higher, patience
        self.stacked = nets.per_member_batches
        self.register_buffer("best_value", torch.full((k,), float("nan"), dtype=torch.float64))
        self.register_buffer("best_epoch", torch.zeros(k, dtype=torch.long))  # 1-based; 0: none yet
        self.register_buffer("stopped", torch.zeros(k, dtype=torch.bool))
        self.n = len(nets.weights())
        for j, w in enumerate(nets.weights()):
            self.register_buffer(f"weights{j}", w.detach().clone())

    def _apply(self, fn, recurse=True):
        value = self.best_value
        super()._apply(fn, recurse)
        self.best_value = value.to(self.best_epoch.device)  # moved with the model, never cast
        return self

    def _kept(self) -> list[Tensor]:
        return [getattr(self, f"weights{j}") for j in range(self.n)]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A checkpoint from before compaction kept a tensor per parameter and block: join the blocks."""
        old = [k for k in state_dict if k.startswith(prefix + "weights")]
        if len(old) > self.n:
            parts = [state_dict.pop(f"{prefix}weights{i}") for i in range(len(old))]
            for j in range(self.n):
                state_dict[f"{prefix}weights{j}"] = torch.cat(parts[j::self.n])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _merged(self, members: Tensor, nets: Plain | Stacked) -> list[Tensor]:
        """Per parameter: the kept weights, with the rows of the members ``nets`` holds taken from
        ``nets`` where ``members`` (a ``(K,)`` mask) is false."""
        if not self.stacked:
            return [torch.where(members.view(()), w, p) for p, w in zip(nets.weights(), self._kept())]
        rows = torch.tensor(nets.members, device=members.device)
        out = []
        for p, w in zip(nets.weights(), self._kept()):
            m = members.index_select(0, rows).view(-1, *[1] * (p.dim() - 1))
            out.append(w.index_copy(0, rows, torch.where(m, w.index_select(0, rows), p.detach())))
        return out

    @torch.no_grad()
    def update(self, values: Tensor, epoch: int, nets: Plain | Stacked) -> None:
        """``values``: this epoch's monitored value per member, ``(K,)``; NaN never improves (a
        member ``nets`` no longer holds has NaN)."""
        values = values.to(torch.float64)
        better = values > self.best_value if self.higher else values < self.best_value
        better |= torch.isnan(self.best_value) & ~torch.isnan(values)
        self.best_epoch.copy_(torch.where(better, epoch, self.best_epoch))
        self.best_value.copy_(torch.where(better, values, self.best_value))
        for w, merged in zip(self._kept(), self._merged(~better, nets)):
            w.copy_(merged)

    def stale(self, epoch: int) -> list[int]:
        """The members whose last improvement is ``patience`` or more epochs ago."""
        if self.patience is None:
            return []
        return [i for i, e in enumerate(self.best_epoch.tolist()) if e and epoch - e >= self.patience]

    @torch.no_grad()
    def selected(self, nets: Plain | Stacked) -> list[Tensor]:
        """Every member's weights of its best epoch, one ``(K, ...)`` tensor per parameter (a member
        that never had a finite value keeps its last weights)."""
        return self._merged(self.best_epoch > 0, nets)


class Classifier(pl.LightningModule):
    """Trains ``nets`` (one per member, same architecture) with ``losses.compute``.

    Logs ``train/loss`` per step (every ``check_every`` steps) and per epoch, ``val/loss``
    and ``val/<yardstick>`` per epoch, ``test/*`` once, each under its member's key
    (``xentlab.metric_keys``; K = 1 too). Metrics accumulate on the device; the only host
    syncs are at logging points (every step on CPU, where they cost nothing). A member whose
    loss turns NaN or infinite stops: its loss leaves the sum, its values are no longer
    logged and ``failed`` records its error, while the other members go on; when none is
    left (K = 1: at once) :class:`NonFiniteLoss` is raised. With ``select_on`` (a validation
    yardstick) every member keeps the weights of its best validation epoch (:class:`Selection`)
    for the test; with ``patience`` a member stops training (``stopped``: its values are no
    longer logged) once it has not improved for that many epochs, and the fit ends when no
    member is left training. Stopped and diverged members leave a stacked model at the end of
    the epoch (:meth:`compact`): its tensors, optimizer state and training batches shrink to the
    members still training, so they stop costing; the test puts every member back, with the
    weights it selected.
    """

    def __init__(self, nets: Sequence[nn.Module], settings: Sequence[MemberSettings], *, kind: str,
                 num_classes: int, optimizer: str, check_every: int, per_class: bool = False,
                 select_on: str | None = None, higher: bool = True, patience: int | None = None):
        super().__init__()
        if len(nets) != len(settings) or not nets:
            raise ValueError(f"one network per member: got {len(nets)} networks for {len(settings)} members")
        self.members = list(settings)
        self.k = len(self.members)
        self.optimizer_name, self.check_every = OptimizerName(optimizer), check_every
        # The losses: members with one loss share its target tensor (the data yields one per loss).
        self.target_losses = list(dict.fromkeys(m.loss for m in self.members))
        if self.k == 1:
            self.net = nets[0]
            self.nets: Plain | Stacked = Plain(self.net)
        else:
            self.nets = Stacked(nets, self.members)
        self._group()
        activations = [m.activation for m in self.members]
        self.evaluation = nn.ModuleDict({s: Yardsticks(kind, activations, num_classes, per_class)
                                         for s in ("val", "test")})
        self.selection = Selection(self.nets, self.k, select_on, higher, patience) if select_on else None
        self.failed: dict[int, NonFiniteLoss] = {}
        self.stopped: set[int] = set()  # early-stopped members: they train no more, their runs finish
        self.selected_val: dict[int, dict[str, float]] = {}  # each member's val/ values at its selected epoch
        self._bad_step: Tensor | None = None  # per member held: the first step whose loss was not finite (0: none)
        self._bad_seen = 0  # how many of those ``failed`` already records
        self._epoch_sum: Tensor | None = None
        self._epoch_count = 0
        # One optimizer, one step per batch: stepping by hand skips Lightning's closure
        # machinery, a measurable share of a small model's step time (scripts/bench.py).
        self.automatic_optimization = False

    def _group(self) -> None:
        """The loss groups of the members the net holds: (loss options, which target tensor, its
        members' slice of the outputs in group order). With several groups the outputs are gathered
        into group order once per step (one gather, not one per group), by index buffers on the device."""
        groups: dict[tuple, list[int]] = {}
        for row, i in enumerate(self.nets.members):
            m = self.members[i]
            groups.setdefault((m.loss, m.activation, m.label_smoothing, m.numerics), []).append(row)
        self._loss_groups, start = [], 0
        for key, idx in groups.items():
            self._loss_groups.append((key, self.target_losses.index(key[0]), slice(start, start + len(idx))))
            start += len(idx)
        if len(groups) > 1:
            order = torch.tensor([i for idx in groups.values() for i in idx], device=self.device)
            self.register_buffer("_order", order, persistent=False)
            self.register_buffer("_unsort", torch.argsort(order), persistent=False)

    def forward(self, x: Tensor, shared: bool = True) -> Tensor:
        """Outputs ``(K, B, C)`` for inputs ``(B, ...)`` shared by all members, or
        (``shared=False``) ``(K, B, ...)``, one batch per member."""
        return self.nets(x, shared)

    def member_losses(self, z: Tensor, targets: Sequence[Tensor], *, shared: bool, reduction: str = "mean") -> Tensor:
        """Each held member's loss, ``(K,)`` (``mean`` over the batch) or ``(K, B)`` (``none``).
        ``targets[j]`` are the targets of ``target_losses[j]``: ``(B, ...)`` shared by every
        member, or (``shared=False``) ``(K, B, ...)``, one batch per member."""
        grouped = len(self._loss_groups) > 1
        z = z.index_select(0, self._order) if grouped else z
        parts = []
        for (loss, activation, smoothing, numerics), target, members in self._loss_groups:
            t, zg = targets[target], z[members]
            k, b = zg.shape[:2]
            if shared:
                t = t.expand(k, *t.shape)
            elif grouped:
                t = t.index_select(0, self._order[members])
            per = losses.compute(loss, activation, zg.reshape(k * b, *zg.shape[2:]), t.reshape(k * b, *t.shape[2:]),
                                 label_smoothing=smoothing, numerics=numerics, reduction="none",
                                 check_values=False).reshape(k, b)
            parts.append(per.mean(1) if reduction == "mean" else per)
        return torch.cat(parts).index_select(0, self._unsort) if grouped else parts[0]

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, _, *targets = batch
        step = self.global_step + 1  # this batch's step, 1-based (global_step moves on at opt.step())
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        shared = not self.nets.per_member_batches
        per_member = self.member_losses(self(x, shared=shared), targets, shared=shared)  # (K,)
        # members share no parameters: the sum gives each its own gradient; a diverged one leaves it
        alive = self._bad_step == 0 if self._bad_step is not None else None
        total = (per_member if alive is None else torch.where(alive, per_member, 0.0)).sum()
        self.manual_backward(total)
        opt.step()
        detached = per_member.detach()
        self._watch(detached, step)
        # Sum on the device; hand Lightning a value only at its logging steps (no per-step
        # logging machinery, no host sync).
        n = x.shape[1 if self.nets.per_member_batches else 0]
        self._epoch_sum = detached * n if self._epoch_sum is None else self._epoch_sum + detached * n
        self._epoch_count += n
        if step % self.check_every == 0:
            self.log_dict(self._named(detached, "train/loss_step"), on_step=True, on_epoch=False)
        return total

    def _watch(self, loss: Tensor, step: int) -> None:
        """Note each member's first non-finite step on the device; read it every
        ``check_every`` steps (every step on CPU, where reading costs nothing)."""
        if self._bad_step is None:
            self._bad_step = torch.zeros(len(loss), dtype=torch.long, device=loss.device)
        bad = ~torch.isfinite(loss) & (self._bad_step == 0)
        self._bad_step = torch.where(bad, step, self._bad_step)
        if loss.device.type == "cpu" or step % self.check_every == 0:
            self._collect_failures()

    def _collect_failures(self) -> None:
        """Record the members newly found diverged (one count per call; a loop over members only when one has)."""
        if self._bad_step is None or int(torch.count_nonzero(self._bad_step)) == self._bad_seen:
            return
        for i, first in zip(self.nets.members, self._bad_step.tolist()):
            if first and i not in self.failed:
                self.failed[i] = NonFiniteLoss(first)
        self._bad_seen = int(torch.count_nonzero(self._bad_step))
        if len(self.failed) == self.k:
            raise self.failed[max(self.failed, key=lambda i: self.failed[i].step)]

    def _alive(self, stage: str = "train") -> list[int]:
        """The members a stage reports: not diverged, and (but for the test) not stopped."""
        return [i for i in range(self.k) if i not in self.failed and (stage == "test" or i not in self.stopped)]

    def _named(self, values: Tensor, key: str) -> dict[str, Tensor]:
        """``values`` of the members the net holds, under the keys of those a stage reports."""
        alive = set(self._alive())
        return {metric_keys.key(i, key): values[row] for row, i in enumerate(self.nets.members) if i in alive}

    def on_train_start(self) -> None:
        """A resumed run's stopped members stay stopped (the checkpoint holds them) and leave the model."""
        if self.selection is not None and bool(self.selection.stopped.any()):
            self.stopped = {i for i, s in enumerate(self.selection.stopped.tolist()) if s}
        self.compact()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["xentlab_selected_val"] = self.selected_val
        checkpoint["xentlab_members"] = self.nets.members  # the rows its stacked tensors hold
        checkpoint["xentlab_failed"] = {i: e.step for i, e in self.failed.items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Before Lightning loads the state: shrink to the members the checkpoint holds, so that its
        tensors and optimizer state fit."""
        self.selected_val = checkpoint.get("xentlab_selected_val", {})
        self.failed = {i: NonFiniteLoss(step) for i, step in checkpoint.get("xentlab_failed", {}).items()}
        members = checkpoint.get("xentlab_members", self.nets.members)
        if members != self.nets.members:
            self.nets.keep(members)
            self._group()

    @torch.no_grad()
    def compact(self) -> None:
        """Drop the members that stopped or diverged from a stacked model (at an epoch's end): its
        tensors, its optimizer's state and the training batches keep only the members still
        training, each with exactly its values, so a step costs what the live members cost and
        each computes what it computes alone. Their selected weights stay in :class:`Selection`."""
        live = [i for i in self.nets.members if i not in self.stopped and i not in self.failed]
        if not live or live == self.nets.members:  # none left: the fit ends instead
            return
        params = self.nets.parameter_blocks()
        rows = self.nets.keep(live)
        opt = self.optimizers().optimizer
        for block, local in zip(params, rows):
            for p in block:
                state = opt.state.get(p, {})
                for name, value in state.items():
                    if isinstance(value, Tensor) and value.dim():  # moments are rows like their parameter
                        state[name] = value.index_select(0, local)
                if not len(local):
                    opt.state.pop(p, None)
        opt.param_groups[:] = [g for g in opt.param_groups if g["params"][0].numel()]
        self._group()
        self._bad_step, self._bad_seen = None, 0
        self.trainer.datamodule.keep(live)

    def on_train_epoch_start(self) -> None:
        self._epoch_sum, self._epoch_count = None, 0

    def epoch_loss(self) -> Tensor | None:
        """Each member's mean training loss over the epoch so far, ``(K,)`` on the device."""
        return None if self._epoch_sum is None else self._epoch_sum / self._epoch_count

    def on_train_epoch_end(self) -> None:
        self._collect_failures()
        if self._epoch_sum is not None:
            self.log_dict(self._named(self.epoch_loss(), "train/loss"), on_step=False, on_epoch=True,
                          sync_dist=self._distributed())
        self.compact()

    def _distributed(self) -> bool:
        """Under DDP each rank sees a shard: epoch values are averaged over the ranks."""
        return self._trainer is not None and self.trainer.world_size > 1

    def _eval_step(self, stage: str, batch) -> None:
        x, labels, *targets = batch
        z = self(x)
        alive = set(self._alive(stage))
        self.evaluation[stage].update(z, labels, self.member_losses(z, targets, shared=True, reduction="none"),
                                      [i if i in alive else None for i in self.nets.members])

    def _eval_epoch_end(self, stage: str) -> None:
        """Log each reported member's values (a stopped one's only in the test) under its keys; from the
        validation, select (the monitored value NaN for the others)."""
        evaluation = self.evaluation[stage]
        values = evaluation.compute()
        evaluation.reset()
        alive = self._alive(stage)
        columns = {name: v.unbind() for name, v in values.items()}
        self.log_dict({metric_keys.key(i, f"{stage}/{name}"): columns[name][i] for i in alive
                       for name in evaluation.keys[i]}, sync_dist=self._distributed())  # already synced: a no-op mean
        if stage == "val" and self.selection is not None and not self.trainer.sanity_checking:
            reported = torch.zeros(self.k, dtype=torch.bool, device=self.device)
            reported[alive] = True
            monitored = torch.where(reported, values[self.selection.monitor], float("nan"))
            self._select(monitored, values)

    def _select(self, monitored: Tensor, values: dict[str, Tensor]) -> None:
        """Keep each improved member's weights and validation values (``values``: ``(K,)`` each); stop
        the members that ran out of patience (a host sync an epoch, and one per value when one improved)."""
        epoch = self.current_epoch + 1
        self.selection.update(monitored, epoch, self.nets)
        improved = [i for i, e in enumerate(self.selection.best_epoch.tolist()) if e == epoch]
        if improved:
            host = {name: v.tolist() for name, v in values.items()}
            keys = self.evaluation["val"].keys
            self.selected_val.update({i: {f"val/{name}": host[name][i] for name in keys[i]} for i in improved})
        stale = [i for i in self.selection.stale(epoch) if i not in self.failed and i not in self.stopped]
        if stale:
            self.stopped.update(stale)
            self.selection.stopped[stale] = True
        if len(self.stopped | set(self.failed)) == self.k:
            self.trainer.should_stop = True

    def use_selected(self) -> None:
        """Test what was selected: every member back in the model, with the weights of its best
        validation epoch."""
        if self.selection is not None:
            self.nets.hold(range(self.k), self.selection.selected(self.nets))
            self._group()

    def trained_and_selected(self, epochs: int) -> list[tuple[int, int]]:
        """Each member's (epochs trained, selected epoch, 1-based) after a fit of ``epochs`` epochs: a
        stopped member stopped ``patience`` epochs after its best (:meth:`Selection.stale`); without a
        best epoch (``select=last``, or never a finite value) the last epoch's weights are tested."""
        best = self.selection.best_epoch.tolist() if self.selection is not None else [0] * self.k
        return [(b + self.selection.patience if i in self.stopped else epochs, b or epochs)
                for i, b in enumerate(best)]

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        cls, keys = OPTIMIZERS[self.optimizer_name]
        groups = [{"params": params, **{k: self.members[self.nets.members[start]].optimizer[k] for k in keys}}
                  for params, (start, stop) in zip(self.nets.parameter_blocks(), self.nets.blocks) if stop > start]
        return cls(groups, fused=self.device.type in FUSED)
