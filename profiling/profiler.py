"""Profile a ``torch.nn.Module``: its cut points, and per unit MACs, parameters, output size.

Why this exists: the planner (``system/``) only sees a *profile* — an ordered list of units
with ``macs``, ``params`` and ``out_elems`` — so those figures must come from the real network,
not from hand-typed tables. This module derives them from the module itself:

1. The module is traced with ``torch.fx`` and its cut points found (``profiling.tracing``):
   after a cut point exactly one tensor is still needed, so a residual block is one unit.
2. The operations between consecutive cut points form a segment. A segment that does no
   multiply-accumulates and keeps the element count (BatchNorm, ReLU, Dropout, Flatten,
   reshapes) is merged into the segment before it: cutting between a conv and its ReLU is
   never worth a separate decision. Pooling changes the element count, so it stays a unit.
3. The module is run once on a zero tensor of ``(1, *input_shape)``; per operation,
   ``torch.utils.flop_counter.FlopCounterMode`` counts FLOPs (convolutions, matmuls); MACs are
   FLOPs / 2. Parameters are counted once, in the unit that first uses them (buffers such as
   BatchNorm running statistics are not parameters). ``out_elems`` is the number of elements
   of the unit's output for one input (batch dimension excluded).

``model_profile`` turns the measured units and their sensitivities into the planner's
``system.profiles.ModelProfile``, checked by the format's one validator. Torch is imported
here only: ``system/`` never needs it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx
from torch import nn

from profiling.tracing import MeasuringInterpreter, cut_indices, trace, value_nodes
from system.profiles import ModelProfile, profile_from_dict


@dataclass
class WeightedLayer:
    """A layer with MACs inside a unit; kept for sensitivity proxies (not written to JSON)."""

    name: str
    macs: int
    params: int
    depth: int  # weighted layers on the longest path from the input, this one included


@dataclass
class UnitInfo:
    """One unit of a profiled module (a segment between two cut points)."""

    name: str
    macs: int
    params: int
    out_elems: int
    in_elems: int
    node_names: list[str] = field(default_factory=list)
    module_names: list[str] = field(default_factory=list)
    layers: list[WeightedLayer] = field(default_factory=list)


@dataclass
class ModuleProfile:
    """What ``profile_module`` measured: units plus totals, before sensitivities are added."""

    input_shape: tuple[int, ...]
    units: list[UnitInfo]
    total_params: int  # all parameters of the module, for a consistency check
    graph_module: torch.fx.GraphModule
    segments: list[list[torch.fx.Node]]

    @property
    def in_elems(self) -> int:
        return math.prod(self.input_shape)

    @property
    def macs(self) -> int:
        return sum(u.macs for u in self.units)

    @property
    def params(self) -> int:
        return sum(u.params for u in self.units)


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"input_shape must be a sequence of ints (C, H, W): {input_shape!r}") from exc
    if not shape or any(d <= 0 for d in shape) or any(int(d) != d for d in input_shape):
        raise ValueError(
            f"input_shape must be positive ints without the batch dimension, got {input_shape!r}"
        )
    return shape


def _first_line(exc: BaseException) -> str:
    """The first line of an error: torch's fx appends the traced graph and hints below it."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _module_of(gm: torch.fx.GraphModule, n: torch.fx.Node) -> nn.Module | None:
    return gm.get_submodule(str(n.target)) if n.op == "call_module" else None


def _is_prefix(prefix: str, name: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _unit_name(core: torch.fx.Node, other_modules: set[str]) -> str:
    """The highest module that holds the unit's core op and nothing from other units."""
    if core.op != "call_module":
        return core.name
    parts = str(core.target).split(".")
    for k in range(1, len(parts) + 1):
        cand = ".".join(parts[:k])
        if not any(_is_prefix(cand, m) for m in other_modules):
            return cand
    return str(core.target)


def profile_module(
    model: nn.Module,
    input_shape: Sequence[int],
    leaf_types: Iterable[type] = (),
    min_units: int = 2,
) -> ModuleProfile:
    """Find the cut points of ``model`` and measure each unit for one input of ``input_shape``.

    ``input_shape`` excludes the batch dimension (C, H, W for images). ``leaf_types`` are
    module classes fx should not look into (their insides are then one op). ``min_units``:
    with fewer units there is no cut to choose (2 means at least one cut inside the network).
    Raises ValueError naming the problem: untraceable module, input shape that does not fit,
    output that is not one tensor, or no valid cut.
    """
    shape = _check_input_shape(input_shape)
    was_training = model.training
    model.eval()
    try:
        gm = trace(model, leaf_types)
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise ValueError(
                f"the module's forward must take exactly one tensor, it takes {len(placeholders)}"
            )
        out_nodes = [n for n in gm.graph.nodes if n.op == "output"]
        out_arg = out_nodes[0].args[0]
        if not isinstance(out_arg, torch.fx.Node):
            raise ValueError(
                "no valid cut: the module's output is not a single tensor "
                f"(got {type(out_arg).__name__}); a profile needs one output tensor"
            )
        interp = MeasuringInterpreter(gm)
        try:
            with torch.no_grad():
                interp.run(torch.zeros((1, *shape)))
        except Exception as exc:
            raise ValueError(
                f"input shape {list(shape)} does not fit {type(model).__name__}: "
                f"{type(exc).__name__}: {_first_line(exc)}"
            ) from exc
        if not interp.is_tensor.get(out_arg, False):
            raise ValueError("no valid cut: the module's output is not a single tensor")
        nodes = value_nodes(gm.graph)
        cut_idx = [i for i in cut_indices(nodes, out_arg) if interp.is_tensor.get(nodes[i], False)]
        segments: list[list[torch.fx.Node]] = []
        start = 1  # nodes[0] is the input placeholder
        for i in cut_idx:
            segments.append(nodes[start : i + 1])
            start = i + 1
        units, merged = _build_units(gm, segments, interp, math.prod(shape))
    finally:
        model.train(was_training)
    if len(units) < min_units:
        raise ValueError(
            f"no valid cut in {type(model).__name__}: it forms {len(units)} unit(s), at least "
            f"{min_units} needed — every point inside it keeps more than one tensor alive "
            "(e.g. a skip connection spanning the whole network) or it does no work"
        )
    total = sum(p.numel() for p in model.parameters())
    return ModuleProfile(shape, units, int(total), gm, merged)


def _build_units(
    gm: torch.fx.GraphModule,
    segments: list[list[torch.fx.Node]],
    interp: MeasuringInterpreter,
    in_elems: int,
) -> tuple[list[UnitInfo], list[list[torch.fx.Node]]]:
    # Merge segments that do no MACs and keep the element count into their predecessor.
    merged: list[list[torch.fx.Node]] = []
    pending: list[torch.fx.Node] = []
    prev_elems = in_elems
    for seg in segments:
        flops = sum(interp.flops[n] for n in seg)
        out_elems = interp.numel[seg[-1]]
        trivial = flops == 0 and out_elems == prev_elems
        if trivial and merged:
            merged[-1].extend(seg)
        elif trivial:
            pending.extend(seg)
        else:
            merged.append(pending + seg)
            pending = []
        prev_elems = out_elems
    if pending:  # the whole module was trivial ops
        merged.append(pending)

    # Longest path depth in weighted layers, for depth-law sensitivity proxies.
    depth: dict[torch.fx.Node, int] = {}
    for n in gm.graph.nodes:
        d_in = max((depth.get(a, 0) for a in n.all_input_nodes), default=0)
        depth[n] = d_in + (1 if interp.flops.get(n, 0) > 0 else 0)

    all_modules = [[str(n.target) for n in seg if n.op == "call_module"] for seg in merged]
    seen_params: set[int] = set()
    units: list[UnitInfo] = []
    prev_elems = in_elems
    for k, seg in enumerate(merged):
        params = 0
        layers: list[WeightedLayer] = []
        for n in seg:
            tensors: list[torch.Tensor] = []
            mod = _module_of(gm, n)
            if mod is not None:
                tensors = list(mod.parameters())
            for a in n.all_input_nodes:  # functional weights reached through get_attr
                if a.op == "get_attr":
                    obj = _fetch_attr(gm, str(a.target))
                    if isinstance(obj, nn.Parameter):
                        tensors.append(obj)
            n_params = 0
            for t in tensors:
                if id(t) not in seen_params:
                    seen_params.add(id(t))
                    n_params += t.numel()
            params += n_params
            if interp.flops.get(n, 0) > 0:
                layer_name = str(n.target) if n.op == "call_module" else n.name
                layers.append(WeightedLayer(layer_name, interp.flops[n] // 2, n_params, depth[n]))
        core = next((n for n in seg if interp.flops.get(n, 0) > 0), None)
        if core is None:  # no MACs: name after the op that changes the element count
            core = next((n for n in seg if interp.numel.get(n, 0) != prev_elems), seg[0])
        others = {m for j, mods in enumerate(all_modules) if j != k for m in mods}
        name = _unit_name(core, others)
        out_elems = interp.numel[seg[-1]]
        units.append(
            UnitInfo(
                name=name,
                macs=sum(interp.flops[n] for n in seg) // 2,
                params=params,
                out_elems=out_elems,
                in_elems=prev_elems,
                node_names=[n.name for n in seg],
                module_names=all_modules[k],
                layers=layers,
            )
        )
        prev_elems = out_elems
    _dedupe_names(units)
    return units, merged


def _fetch_attr(gm: torch.fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _dedupe_names(units: list[UnitInfo]) -> None:
    counts: dict[str, int] = {}
    for u in units:
        counts[u.name] = counts.get(u.name, 0) + 1
    seen: dict[str, int] = {}
    for u in units:
        if counts[u.name] > 1:
            seen[u.name] = seen.get(u.name, 0) + 1
            u.name = f"{u.name}#{seen[u.name]}"


def split_units(prof: ModuleProfile) -> list[nn.Module]:
    """One runnable module per unit: feeding unit k's output to unit k+1 reproduces the model.

    Why: calibration quantizes one unit's weights or the tensor at one cut and runs the rest,
    which needs the network as a chain of units. Each unit is a small fx GraphModule that
    shares its parameters with the original model (nothing is copied).
    """
    gm = prof.graph_module
    parts: list[nn.Module] = []
    for seg in prof.segments:
        g = torch.fx.Graph()
        env: dict[torch.fx.Node, torch.fx.Node] = {}
        seg_set = set(seg)
        x = g.placeholder("x")
        first_inputs = [a for n in seg for a in n.all_input_nodes if a not in seg_set]

        def lookup(a: torch.fx.Node, g: torch.fx.Graph = g, env: dict = env) -> torch.fx.Node:
            if a in env:
                return env[a]
            if a.op == "get_attr":
                env[a] = g.get_attr(str(a.target))
                return env[a]
            raise ValueError(f"unit input {a.name} is not the tensor at the cut")

        for a in first_inputs:
            if a.op != "get_attr":
                env[a] = x
        for n in seg:
            env[n] = g.node_copy(n, lookup)
        g.output(env[seg[-1]])
        parts.append(torch.fx.GraphModule(gm, g))
    return parts


def model_profile(
    prof: ModuleProfile,
    name: str,
    sens_w: Sequence[float],
    sens_a: Sequence[float],
    sensitivity_source: str,
    base_accuracy_pct: float,
    provenance: dict[str, Any],
    input_bits: int = 8,
) -> ModelProfile:
    """The planner's profile of a profiled module, checked by ``system.profiles``' validator.

    A unit without parameters gets sens_w 0 and the last unit sens_a 0 (cut L is
    device-only: no activation is sent), as the format requires.
    """
    if len(sens_w) != len(prof.units) or len(sens_a) != len(prof.units):
        raise ValueError(
            f"sensitivities missing: {len(prof.units)} units but {len(sens_w)} sens_w and "
            f"{len(sens_a)} sens_a values"
        )
    units = prof.units
    candidate = ModelProfile(
        name=name,
        unit_names=tuple(u.name for u in units),
        macs=np.array([u.macs for u in units], dtype=np.float64),
        params=np.array([u.params for u in units], dtype=np.float64),
        out_elems=np.array([u.out_elems for u in units], dtype=np.float64),
        sens_w=np.array([w if u.params > 0 else 0.0 for u, w in zip(units, sens_w, strict=True)],
                        dtype=np.float64),
        sens_a=np.array([*list(sens_a)[:-1], 0.0], dtype=np.float64),
        in_elems=prof.in_elems,
        input_bits=int(input_bits),
        base_accuracy_pct=float(base_accuracy_pct),
        sensitivity_source=sensitivity_source,
        input_shape=prof.input_shape,
        provenance=provenance,
    )
    return profile_from_dict(candidate.to_dict(), where=f"profile {name}")
