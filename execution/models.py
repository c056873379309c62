"""The models a plan runs on, cut at the profiler's unit boundaries into a head and a tail.

Why: the head the device runs and the tail the server runs must be exactly the units the
planner's profile counts, so both come from ``profiling.profiler.split_units`` on the same
module, and the profile's unit count, MACs and parameters are checked against it on load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from profiling.profiler import profile_module, split_units
from system.errors import QsplitInputError
from system.profiles import ModelProfile, load_profile


def _digits_net(net: str) -> Callable[[bool], nn.Module]:
    """A digits network of ``profiling.digits.NETS``: its committed weights, or untrained."""
    def build(trained: bool) -> nn.Module:
        from profiling import digits

        return digits.load_net(net) if trained else digits.NETS[net]()
    return build


def _resnet18(trained: bool) -> nn.Module:
    from profiling.architectures import resnet18_module

    return resnet18_module(seed=0)   # random init (no ImageNet weights): bytes and times only


#: model name -> (builder(trained) -> module, input shape without batch)
MODELS: dict[str, tuple[Callable[[bool], nn.Module], tuple[int, ...]]] = {
    "digits_cnn": (_digits_net("digits_cnn"), (1, 8, 8)),
    "digits_resnet": (_digits_net("digits_resnet"), (1, 8, 8)),
    "resnet18": (_resnet18, (3, 224, 224)),
}


@dataclass
class SplitModel:
    """A module as its chain of units, with the planner's profile of it."""

    name: str
    units: list[nn.Module]
    profile: ModelProfile
    input_shape: tuple[int, ...]
    out_shapes: list[tuple[int, ...]]  # per unit, the output shape for one input (batch 1)

    @property
    def n_units(self) -> int:
        return len(self.units)

    def run(self, start: int, stop: int, x: torch.Tensor) -> torch.Tensor:
        """Units start..stop-1 on x (no grad)."""
        with torch.no_grad():
            for u in self.units[start:stop]:
                x = u(x)
        return x

    def cut_shape(self, cut: int) -> tuple[int, ...]:
        """Shape (batch 1) of the tensor that crosses the link at ``cut`` (the input at 0)."""
        return (1, *self.input_shape) if cut == 0 else self.out_shapes[cut - 1]

    def head_tensors(self, cut: int) -> list[tuple[int, str, torch.Tensor]]:
        """(unit, name, tensor) of every float tensor the head needs, in a fixed order."""
        out = []
        for i in range(cut):
            for name, t in self.units[i].state_dict(keep_vars=True).items():
                if torch.is_floating_point(t):
                    out.append((i, name, t))
        return out


def load_split_model(name: str, trained: bool = True) -> SplitModel:
    """The model ``name`` (see MODELS) as units; ``trained=False`` builds the architecture only
    (what a device holds before the head arrives)."""
    if name not in MODELS:
        raise QsplitInputError(f"model: {name!r} is not one of {sorted(MODELS)}")
    build, shape = MODELS[name]
    module = build(trained).eval()
    prof = profile_module(module, shape)
    profile = load_profile(name)
    macs = np.array([u.macs for u in prof.units], dtype=np.float64)
    params = np.array([u.params for u in prof.units], dtype=np.float64)
    if (
        len(prof.units) != profile.n_units
        or not np.array_equal(macs, profile.macs)
        or not np.array_equal(params, profile.params)
    ):
        raise QsplitInputError(
            f"model {name}: the module's units differ from its profile "
            f"({len(prof.units)} units against {profile.n_units})"
        )
    units = split_units(prof)
    for u in units:
        u.eval()
    shapes = []
    with torch.no_grad():
        x = torch.zeros((1, *shape))
        for u in units:
            x = u(x)
            shapes.append(tuple(x.shape))
    return SplitModel(name, units, profile, shape, shapes)
