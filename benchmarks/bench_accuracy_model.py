"""Validate the accuracy model of each real network on plans it was not fitted on.

What it does, per network (``digits_cnn``, ``digits_resnet``): reads the committed profile
``system/data/profiles/<net>.json`` (sensitivities, evidence and the compounding correction g
were all fitted on the *calibration* half of the held-out digits), draws fresh mixed plans
(another seed; stratified over the corrected prediction g(s): 200 at 0.1-5 pp, 80 at
5-15 pp), and runs each plan the way ``execution/`` does, in process: the head's weights are
quantized to codes, packed and framed (``execution.codec``, ``execution.packing``,
``execution.frames``), decoded into a device copy of the head, the head runs, each request's
cut tensor is framed at the plan's width and decoded, the tail runs in float. Top-1 against
the fp32 network is measured on the *validation* half (round-to-nearest, as execution
rounds). The same plans are also run through the simulated quantizer (``profiling.chain``) and
the number of plans where the two disagree is printed (expected: 0).

Figures, before (the additive law with one safety factor, as before g existed) and after
(g of the additive sum, the profile's ``compounding``), on the same measurements:
  spearman       rank correlation of predicted and measured drop, all plans    target >= 0.95
  mae_pp         mean |predicted - measured|, plans predicted at 0.1-5 pp      target <= 0.25
  mae_pp_beyond  the same over plans predicted at 5-15 pp                      target <= 1.0
  safe_rate      (plan, budget) pairs predicted within 0.5/1/2/5 pp measured within  >= 0.97
and the per-width law table of the one-tensor calibration (from the profile's provenance).
Last line of stdout: one JSON object keyed by network. Writes docs/img/accuracy_model.png.

Run:  .venv/bin/python benchmarks/bench_accuracy_model.py [--nets digits_cnn digits_resnet]
CPU only, one thread; a few minutes per network.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGETS = {"spearman": (">=", 0.95), "mae_pp": ("<=", 0.25), "mae_pp_beyond": ("<=", 1.0),
           "safe_rate": (">=", 0.97)}


class PackedRunner:
    """Plans run as execution/ runs them (frames, packing, head/tail split), in process.

    Why in process: the bytes and the arithmetic are execution's own (its codec and
    framing), while TCP would only add time. ``server`` units hold the fp32 weights; the head
    is decoded from frames into a deep copy (``device``), as a device receives it.
    """

    def __init__(self, units: list, x: Any, y: Any) -> None:
        import torch

        self.server = list(units)
        self.device = copy.deepcopy(self.server)
        for u in (*self.server, *self.device):
            u.eval()
        self.x, self.y = x, y
        with torch.no_grad():
            h = x
            for u in self.server:
                h = u(h)
        self.base_correct = int((h.argmax(1) == y).sum())

    def load_head(self, cut: int, weight_bits: tuple[int, ...]) -> list:
        """Frame every float tensor of units 0..cut-1 at its unit's width, decode into the
        device copy; returns the decoded frames (for checks)."""
        import torch

        from execution.codec import tensor_frame, tensor_from_frame
        from execution.frames import decode

        frames = []
        for i in range(cut):
            mine = self.device[i].state_dict(keep_vars=True)
            for name, t in self.server[i].state_dict(keep_vars=True).items():
                if not torch.is_floating_point(t):
                    continue
                f = decode(tensor_frame(t, weight_bits[i]))
                with torch.no_grad():
                    mine[name].copy_(tensor_from_frame(f, tuple(t.shape), f"unit {i} {name}"))
                frames.append(f)
        return frames

    def cut_tensor(self, h: Any, bits: int) -> Any:
        """Each request's cut tensor framed at ``bits`` and decoded (batch 1 per frame)."""
        import torch

        from execution.codec import act_frame, act_from_frame
        from execution.frames import decode

        shape = (1, *h.shape[1:])
        return torch.cat([act_from_frame(decode(act_frame(h[j : j + 1], bits)), shape, bits)
                          for j in range(h.shape[0])])

    def predictions(self, plan: Any) -> Any:
        import torch

        self.load_head(plan.cut, plan.weight_bits)
        with torch.no_grad():
            h = self.x
            for u in self.device[: plan.cut]:
                h = u(h)
            if plan.cut < len(self.server):
                h = self.cut_tensor(h, plan.act_bits)
                for u in self.server[plan.cut :]:
                    h = u(h)
        return h.argmax(1)

    def drop_pp(self, plan: Any) -> float:
        """Top-1 drop (pp) against the fp32 network."""
        correct = int((self.predictions(plan) == self.y).sum())
        return 100.0 * (self.base_correct - correct) / len(self.y)

    def measure(self, plans: list) -> np.ndarray:
        return np.array([self.drop_pp(p) for p in plans])


def packed_runner(net: str) -> PackedRunner:
    """The packed runner of a digits network on its validation half (3 views per image)."""
    from profiling import digits
    from profiling.profiler import profile_module, split_units

    units = split_units(profile_module(digits.load_net(net), digits.INPUT_SHAPE))
    split = digits.load_split()
    return PackedRunner(units, *digits.eval_views(split.x_val, split.y_val))


def plot(results: dict[str, dict], path: Path) -> None:
    """Measured against predicted drop per network: before (grey) and after g (blue)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.0 * len(results), 5.4), dpi=110,
                             squeeze=False)
    for ax, (net, r) in zip(axes[0], results.items(), strict=True):
        a = r["arrays"]
        hi = float(max(a["meas"].max(), a["pred_after"].max())) * 1.05
        ax.plot([0, hi], [0, hi], color="0.3", lw=1, label="measured = predicted")
        ax.scatter(a["pred_before"], a["meas"], s=9, color="0.6", alpha=0.6,
                   label=f"before: {r['before']['law']}")
        ax.scatter(a["pred_after"], a["meas"], s=11, color="tab:blue", alpha=0.8,
                   label=f"after: {r['after']['law']}")
        for b in (0.5, 1.0, 2.0, 5.0):
            ax.axvline(b, color="tab:green", lw=0.6, ls=":")
        ax.set_xlim(0, hi)
        ax.set_ylim(min(0.0, float(a["meas"].min()) * 1.1), hi)
        ax.set_xlabel("predicted top-1 drop (pp)")
        ax.set_ylabel("measured top-1 drop (pp), validation half, packed")
        f = r["after"]
        ax.set_title(f"{net}: {r['plans']} plans; after: Spearman {f['spearman']:.3f}, "
                     f"MAE {f['mae_pp']:.2f} / {f['mae_pp_beyond']:.2f} pp, safe "
                     f"{f['safe_rate']:.3f}", fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def diagnostics(profile: Any, a: dict, meas_cal: np.ndarray) -> dict[str, Any]:
    """What limits the figures (not targets): the same plans measured on the calibration
    half (how far two halves of real images disagree: a floor under any predictor's MAE),
    and g without its safety margin."""
    from profiling.netcal import IN_RANGE_PP, figures
    from profiling.safety import spearman

    pred, meas = a["pred_after"], a["meas"]
    inside = (pred >= IN_RANGE_PP[0]) & (pred <= IN_RANGE_PP[1])
    k = profile.compounding.fit["safety_factor"] if profile.compounding is not None else 1.0
    raw = figures(pred / k, meas)
    no2 = np.array([min((*p.weight_bits, p.act_bits)) > 2 if p.cut else True for p in a["plans"]])
    sub = figures(pred[no2], meas[no2])
    return {
        "plans_without_2_bits": {"plans": int(no2.sum()), **{key: sub[key] for key in
                                 ("spearman", "mae_pp", "mae_pp_beyond", "safe_rate")},
                                 "measured_min_pp": round(float(meas[no2].min()), 3),
                                 "measured_max_pp": round(float(meas[no2].max()), 3)},
        "halves_mae_pp": round(float(np.abs(meas_cal - meas)[inside].mean()), 4),
        "halves_mae_pp_beyond": round(float(np.abs(meas_cal - meas)[~inside].mean()), 4),
        "halves_spearman": round(spearman(meas_cal, meas), 4),
        "after_without_margin": {key: raw[key] for key in
                                 ("mae_pp", "mae_pp_beyond", "safe_rate")},
    }


def report(net: str, r: dict, profile: Any) -> dict[str, Any]:
    """Print one network's figures; returns its JSON entry."""
    from profiling.calibrate import law_table_text

    law = profile.provenance["calibration"]["law_per_width"]
    fit = profile.compounding.fit if profile.compounding is not None else {}
    print(f"== {net}: {r['plans']} validation plans ({r['val_images']} images x 3 views, "
          f"measured 0-{r['measured_max_pp']} pp), packed as execution runs them; "
          f"{r['packed_vs_simulated_differ']} plans differ from the simulated quantizer")
    print(f"  g: {fit.get('chosen')} (CV MAE pp {fit.get('cv_mae_pp')}), safety factor "
          f"{fit.get('safety_factor')} on {fit.get('plans')} calibration plans")
    print(f"  {'figure':<14} {'before':>8} {'after':>8}  target")
    entry: dict[str, Any] = {"plans": r["plans"], "before": {}, "after": {}, "targets": {}}
    for key, (op, target) in TARGETS.items():
        vals = [r[w][key] for w in ("before", "after")]
        ok = vals[1] is not None and (vals[1] >= target if op == ">=" else vals[1] <= target)
        shown = [f"{v:8.3f}" if v is not None else "       -" for v in vals]
        print(f"  {key:<14} {shown[0]} {shown[1]}  {op} {target}  {'ok' if ok else 'MISSED'}")
        entry["targets"][key] = {"target": f"{op} {target}", "met": bool(ok)}
    for w in ("before", "after"):
        entry[w] = {k: v for k, v in r[w].items()}
        over = ", ".join(f"{b} pp: {n_over}/{n}" for b, (n, n_over) in r[w]["over_budget"].items())
        print(f"  {w}: over budget (measured over / predicted within) {over}")
    d = r["diagnostics"]
    print(f"  diagnostics: the same plans on the calibration half differ from the validation "
          f"half by {d['halves_mae_pp']} pp (predicted 0.1-5 pp) / {d['halves_mae_pp_beyond']} "
          f"pp (beyond), Spearman {d['halves_spearman']}; g without its margin: "
          f"{d['after_without_margin']}; after, plans with no 2-bit tensor: "
          f"{d['plans_without_2_bits']}")
    print("  one-tensor law per width (calibration half):")
    print(law_table_text(law))
    entry.update({"law_per_width": law, "measured_max_pp": r["measured_max_pp"],
                  "packed_vs_simulated_differ": r["packed_vs_simulated_differ"],
                  "diagnostics": d,
                  "chosen_g": fit.get("chosen"), "cv_mae_pp": fit.get("cv_mae_pp"),
                  "safety_factor_g": fit.get("safety_factor"),
                  "safety_factor_before": fit.get("additive_k_before"),
                  "seconds": r["seconds"]})
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", default=["digits_cnn", "digits_resnet"])
    parser.add_argument("--seed", type=int, default=1000, help="seed of the validation plans")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="plans per bin x this (0.25 for a quick look)")
    parser.add_argument("--png", default=str(ROOT / "docs" / "img" / "accuracy_model.png"))
    args = parser.parse_args()

    import torch

    from profiling.chain import measure_plans
    from profiling.digits import check_net
    from profiling.netcal import VAL_PER_BIN, net_chains, validate_net
    from system.profiles import load_profile_file

    torch.set_num_threads(1)  # one thread: faster than two on a shared 2-core machine
    if not 0 < args.scale <= 4:
        raise SystemExit("--scale: expected a factor in (0, 4]")
    per_bin = [max(1, round(n * args.scale)) for n in VAL_PER_BIN]
    results, out = {}, {}
    try:
        for net in args.nets:
            check_net(net, "--nets")
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    for net in args.nets:
        t0 = time.perf_counter()
        profile = load_profile_file(ROOT / "system" / "data" / "profiles" / f"{net}.json")
        runner = packed_runner(net)
        r = validate_net(profile, net, measure=runner.measure, seed=args.seed, per_bin=per_bin)
        _, _, cal_chain, val_chain, _ = net_chains(net)
        a = r["arrays"]
        sim = measure_plans(val_chain, a["plans"])
        r["packed_vs_simulated_differ"] = int((sim != a["meas"]).sum())
        r["diagnostics"] = diagnostics(profile, a, measure_plans(cal_chain, a["plans"]))
        r["seconds"] = round(time.perf_counter() - t0, 1)
        results[net] = r
        out[net] = report(net, r, profile)
    plot(results, Path(args.png))
    print(f"plot: {args.png}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
