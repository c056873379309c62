"""Trace a ``torch.nn.Module`` with ``torch.fx`` and find where it may be cut.

Why: a cut must leave exactly one tensor to send. The module is traced symbolically into a
graph of operations in execution order; a **cut point** is an operation after which exactly
one value is still needed by the rest of the network, its own output. Inside a residual
block the block input is still alive, so no cut falls inside it. The traced graph is then run
once by :class:`MeasuringInterpreter`, which records per operation the FLOPs
(``torch.utils.flop_counter.FlopCounterMode``) and the size of the output.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


class _LeafTracer(torch.fx.Tracer):
    """An fx tracer that keeps user-named module types opaque (e.g. untraceable blocks)."""

    def __init__(self, leaf_types: tuple[type, ...]) -> None:
        super().__init__()
        self._leaf_types = leaf_types

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if self._leaf_types and isinstance(m, self._leaf_types):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module, leaf_types: Iterable[type] = ()) -> torch.fx.GraphModule:
    """Symbolically trace ``model``; a clear ValueError if fx cannot trace it."""
    tracer = _LeafTracer(tuple(leaf_types))
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, NotImplementedError ...
        raise ValueError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(exc).__name__}: {exc}); "
            "data-dependent control flow must live inside a module passed as a leaf type "
            "(profile_module(..., leaf_types=[ThatModule]))"
        ) from exc
    gm = torch.fx.GraphModule(tracer.root, graph, type(model).__name__)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def value_nodes(graph: torch.fx.Graph) -> list[torch.fx.Node]:
    """The nodes that compute a value, in execution order (attributes and output left out)."""
    return [n for n in graph.nodes if n.op not in ("get_attr", "output")]


def cut_indices(nodes: list[torch.fx.Node], out_node: torch.fx.Node) -> list[int]:
    """Indices i such that after nodes[i] only nodes[i]'s value is still needed.

    Node j's value is needed after position i iff some user of j sits after i (the output
    node counts as the end). Scanning with a running maximum of last uses makes it O(N).
    """
    index = {n: i for i, n in enumerate(nodes)}
    end = len(nodes)
    last_use = []
    for n in nodes:
        uses = [index.get(u, end) for u in n.users]
        last_use.append(max(uses) if uses else index[n])
    cuts: list[int] = []
    running = -1  # max last use among nodes[0..i-1]
    for i, n in enumerate(nodes):
        if n.op != "placeholder" and running <= i and n.users:
            cuts.append(i)
        running = max(running, last_use[i])
        if n is out_node:
            if not cuts or cuts[-1] != i:
                cuts.append(i)  # unreachable in practice: the output value is always a cut
            break
    return cuts


class MeasuringInterpreter(torch.fx.Interpreter):
    """Runs the traced graph once, recording FLOPs and the output tensor of every node."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        super().__init__(gm)
        self.flops: dict[torch.fx.Node, int] = {}
        self.numel: dict[torch.fx.Node, int] = {}
        self.is_tensor: dict[torch.fx.Node, bool] = {}

    def run_node(self, n: torch.fx.Node) -> Any:
        counter = FlopCounterMode(display=False)
        with counter:
            out = super().run_node(n)
        self.flops[n] = int(counter.get_total_flops())
        self.is_tensor[n] = isinstance(out, torch.Tensor)
        self.numel[n] = int(out.numel()) if isinstance(out, torch.Tensor) else 0
        return out
