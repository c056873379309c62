"""The leaderboard's PNG plots: regret CDF, cost against uplink, chosen cuts, energy/latency."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from leaderboard.records import column, group_by
from leaderboard.suites import BASELINES
from system.atomic import atomic_write_bytes
from system.profiles import ModelProfile

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Colors = dict[str, tuple[float, ...]]


def _style(ax: Axes, xlabel: str, ylabel: str, title: str, logy: bool = True) -> None:
    """Log axes, labels, a light grid and a small legend (what every plot here shares)."""
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)


def _regret_cdf(plt: ModuleType, by_dec: dict[str, list[dict]], colors: Colors) -> Figure:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for d, rs in by_dec.items():
        reg = np.sort(column(rs, "regret"))
        ax.step(reg, np.arange(1, len(reg) + 1) / len(reg), where="post", label=d, color=colors[d])
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlim(left=0)
    ax.set_xlabel("regret = cost / optimal cost - 1 (symlog)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("Regret CDF per decider")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _cost_vs_uplink(plt: ModuleType, by_dec: dict[str, list[dict]], colors: Colors) -> Figure:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    up_all = np.concatenate([column(rs, "up_bps") for rs in by_dec.values()]) / 1e6
    edges = np.geomspace(up_all.min(), up_all.max() * (1 + 1e-9), 16)
    mid = np.sqrt(edges[:-1] * edges[1:])
    for d, rs in by_dec.items():
        up, cost = column(rs, "up_bps") / 1e6, column(rs, "cost")
        idx = np.digitize(up, edges) - 1
        med = [np.median(cost[idx == k]) if np.any(idx == k) else np.nan for k in range(len(mid))]
        ax.plot(mid, med, marker="o", ms=3, label=d, color=colors[d])
    _style(ax, "uplink rate, Mbit/s (log bins)", "median cost = latency_s + beta energy_j",
           "Cost against uplink rate")
    return fig


def _cut_map(plt: ModuleType, by_dec: dict[str, list[dict]], n_units: int) -> Figure:
    learned = [d for d in by_dec if d not in BASELINES and d != "optimal"]
    panels = [*learned, "optimal"] if "optimal" in by_dec else learned or list(by_dec)[:1]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.0), squeeze=False,
                             sharey=True)
    sc = None
    for ax, d in zip(axes[0], panels, strict=True):
        rs = by_dec[d]
        sc = ax.scatter(column(rs, "up_bps") / 1e6, column(rs, "dev_flops_per_s") / 1e9,
                        c=column(rs, "cut"), cmap="viridis", vmin=0, vmax=n_units, s=6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("uplink rate, Mbit/s")
        ax.set_title(f"chosen cut: {d}")
    axes[0][0].set_ylabel("device compute, GFLOP/s")
    fig.colorbar(sc, ax=axes[0].tolist(), label=f"cut (0 = server-only, {n_units} = device-only)")
    return fig


def _energy_latency(plt: ModuleType, by_dec: dict[str, list[dict]], colors: Colors) -> Figure:
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for d, rs in by_dec.items():
        per_case = group_by(rs, "case").values()
        ax.scatter([1e3 * column(c, "latency_s").mean() for c in per_case],
                   [1e3 * column(c, "energy_j").mean() for c in per_case], s=14, alpha=0.6,
                   color=colors[d])
        ax.scatter([1e3 * column(rs, "latency_s").mean()], [1e3 * column(rs, "energy_j").mean()],
                   s=90, marker="X", color=colors[d], edgecolor="black", label=d)
    _style(ax, "mean latency, ms", "mean device energy, mJ",
           "Energy against latency (X: all requests, dots: one per case)")
    return fig


def write_plots(rows: Sequence[dict], out: Path, profile: ModelProfile) -> list[Path]:
    """eval_regret_cdf, eval_cost_vs_uplink, eval_cut_map, eval_energy_latency (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_dec = group_by(rows, "decider")
    colors = {d: plt.cm.tab10(i % 10) for i, d in enumerate(by_dec)}
    figures = {"eval_regret_cdf": _regret_cdf(plt, by_dec, colors),
               "eval_cost_vs_uplink": _cost_vs_uplink(plt, by_dec, colors),
               "eval_cut_map": _cut_map(plt, by_dec, profile.n_units),
               "eval_energy_latency": _energy_latency(plt, by_dec, colors)}
    paths = []
    for name, fig in figures.items():
        paths.append(out / f"{name}.png")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        atomic_write_bytes(paths[-1], buf.getvalue())
        plt.close(fig)
    return paths
