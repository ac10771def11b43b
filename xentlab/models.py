"""Networks that end in raw outputs: the output activation belongs to the loss layer."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from xentlab.config import HiddenActivation

HIDDEN_ACTIVATIONS: dict[HiddenActivation, type[nn.Module]] = {
    HiddenActivation.relu: nn.ReLU, HiddenActivation.sigmoid: nn.Sigmoid, HiddenActivation.tanh: nn.Tanh}

MODELS: dict[str, Callable[[Any, tuple[int, ...], int], nn.Module]] = {}
INPUT_RANK: dict[str, int] = {}  # models that need inputs of one rank per example (cnn: C, H, W)


def model(name: str, input_rank: int | None = None):
    def register(fn):
        MODELS[name] = fn
        if input_rank is not None:
            INPUT_RANK[name] = input_rank
        return fn

    return register


def check_input(name: str, input_shape: tuple[int, ...], task: str) -> None:
    """Refuse a model that cannot take the task's inputs, before anything is built."""
    rank = INPUT_RANK.get(name)
    if rank is not None and len(input_shape) != rank:
        raise ValueError(f"model={name} needs inputs of {rank} dimensions per example (images: C, H, W); "
                         f"task={task} has inputs of shape {tuple(input_shape)}: use model=mlp (it flattens any shape)")


def _hidden(cfg) -> type[nn.Module]:
    return HIDDEN_ACTIVATIONS[HiddenActivation(cfg.hidden_activation)]


@model("mlp")
def mlp(cfg, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """Flatten, then ``cfg.hidden`` fully connected layers, then a linear output layer."""
    act = _hidden(cfg)
    n_in = 1
    for d in input_shape:
        n_in *= d
    layers: list[nn.Module] = [nn.Flatten()]
    for width in cfg.hidden:
        layers += [nn.Linear(n_in, width), act()]
        n_in = width
    layers.append(nn.Linear(n_in, num_outputs))
    return nn.Sequential(*layers)


@model("cnn", input_rank=3)
def cnn(cfg, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """3x3 conv + 2x2 max-pool blocks (``cfg.channels``), then the MLP head (``cfg.hidden``)."""
    act = _hidden(cfg)
    c, h, w = input_shape
    layers: list[nn.Module] = []
    for out in cfg.channels:
        layers += [nn.Conv2d(c, out, 3, padding=1), act(), nn.MaxPool2d(2)]
        c, h, w = out, h // 2, w // 2
    layers.append(nn.Flatten())
    n_in = c * h * w
    for width in cfg.hidden:
        layers += [nn.Linear(n_in, width), act()]
        n_in = width
    layers.append(nn.Linear(n_in, num_outputs))
    return nn.Sequential(*layers)


def build(cfg, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """The network with PyTorch's default initialisation, its weights times ``cfg.init_scale``
    (large scales saturate the output activation: how losses cope with a bad start)."""
    if cfg.name not in MODELS:
        raise ValueError(f"unknown model {cfg.name!r}; valid choices are: {', '.join(MODELS)}")
    net = MODELS[cfg.name](cfg, tuple(input_shape), num_outputs)
    scale = getattr(cfg, "init_scale", 1.0)
    if scale != 1.0:
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(scale)
    return net
