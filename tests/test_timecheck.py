"""The cut-level checks of the per-unit time model (profiling.timecheck), unit tables timed
after idle gaps (time-units --idle-ms), the device's CPU quota (execution.cpulimit), and the
cost-model benchmark end to end (slow, root only)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from profiling import timecheck as tc
from system.errors import QsplitInputError
from system.profiles import load_profile

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------- MAPE and regret
def test_macs_only_keeps_the_total_and_prices_zero_mac_units_at_zero() -> None:
    t = np.array([1.0, 3.0, 2.0])
    pred = tc.macs_only_times(np.array([10.0, 0.0, 30.0]), t)
    assert pred.sum() == pytest.approx(t.sum())
    assert pred.tolist() == pytest.approx([1.5, 0.0, 4.5])


def test_head_tail_sums_cover_every_cut() -> None:
    head, tail = tc.head_tail_sums(np.array([1.0, 2.0, 4.0]))
    assert head.tolist() == [1.0, 3.0, 7.0]     # cuts 1..3
    assert tail.tolist() == [7.0, 6.0, 4.0]     # cuts 0..2


def test_mape_per_unit_and_per_cut() -> None:
    meas = np.array([1.0, 1.0])
    pred = np.array([1.5, 0.5])                 # +-50% per unit, errors cancel in the sum
    assert tc.mape(pred, meas) == pytest.approx(0.5)
    # heads 1.5/1, 2/2; tails 2/2, 0.5/1
    assert tc.mape_per_cut(pred, meas) == pytest.approx((0.5 + 0 + 0 + 0.5) / 4)


def test_mape_refuses_bad_measurements() -> None:
    with pytest.raises(QsplitInputError, match="meas: expected a non-empty 1-D array of times > 0 s"):
        tc.mape(np.array([1.0]), np.array([0.0]))
    with pytest.raises(QsplitInputError, match="pred: 1 values for 2 measured"):
        tc.mape(np.array([1.0]), np.array([1.0, 2.0]))


def test_chosen_cut_and_regret() -> None:
    meas = {0: 0.30, 1: 0.20, 2: 0.25}
    assert tc.chosen_cut(meas) == 1
    assert tc.chosen_cut({0: 1.0, 1: 1.0}) == 0            # ties: the lowest cut
    assert tc.cut_regret(meas, 1) == 0.0
    assert tc.cut_regret(meas, 2) == pytest.approx(0.25)
    with pytest.raises(QsplitInputError, match=r"cut: 5 was not measured \(cuts \[0, 1, 2\]\)"):
        tc.cut_regret(meas, 5)
    with pytest.raises(QsplitInputError, match="latency_s: no cuts"):
        tc.chosen_cut({})


# ------------------------------------------------------------------------- time-units --idle-ms
def test_idle_gap_is_recorded_and_kept_out_of_the_eff_fit() -> None:
    torch = pytest.importorskip("torch")
    from profiling.profiler import profile_module, split_units
    from profiling.timing import reference_names, time_units, with_table
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 10))
    units = split_units(profile_module(model, (1, 8, 8)))
    x = torch.zeros(1, 1, 8, 8)
    t, prov = time_units(units, x, threads=1, repeats=2, warmup=0, idle_s=0.002)
    assert prov["idle_ms"] == 2.0 and prov["method"] == "profiler" and (t > 0).all()
    _, warm = time_units(units, x, threads=1, repeats=2, warmup=0)
    assert warm["idle_ms"] == 0.0
    prof = load_profile("digits_cnn")
    t9 = next(iter(prof.time_tables.values())).time_s   # a realistic table: o > 0 in the fit
    prof = with_table(with_table(prof, "host-w", t9, warm), "host-i", t9 * 3, prov)
    assert "host-w" in reference_names(prof) and "host-i" not in reference_names(prof)
    with pytest.raises(QsplitInputError, match=r"idle_s: -1 is outside the allowed range \[0, 10\] s"):
        time_units(units, x, threads=1, repeats=1, idle_s=-1.0)


def test_time_units_cli_refuses_a_negative_idle_gap(tmp_path: Path, capsys) -> None:
    pytest.importorskip("torch")
    from profiling.__main__ import main
    p = tmp_path / "d.json"
    p.write_text(json.dumps(load_profile("digits_cnn").to_dict()))
    before = p.read_text()
    assert main(["time-units", "--profile", str(p), "--idle-ms", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --idle-ms: -1 is outside the allowed range [0, 10000] ms"]
    assert p.read_text() == before


# ------------------------------------------------------------------------- CPU quota
def test_cpu_share_refuses_out_of_range_shares() -> None:
    from execution.cpulimit import CpuShare
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(QsplitInputError, match="cpu_share"):
            CpuShare(bad)


def test_cpu_share_group_is_made_and_removed() -> None:
    from execution import cpulimit
    if cpulimit.unavailable_reason() is not None:
        pytest.skip(cpulimit.unavailable_reason())
    with cpulimit.CpuShare(0.5) as share:
        assert (share.path / "cpu.cfs_quota_us").read_text().strip() == "1000"
        assert (share.path / "cpu.cfs_period_us").read_text().strip() == "2000"
        r = subprocess.run(share.wrap(["cat", "/proc/self/cgroup"]), capture_output=True, text=True)
        assert share.path.name in r.stdout
    assert not share.path.exists()


# ------------------------------------------------------------------------- the benchmark
@pytest.mark.slow
def test_bench_cost_model_runs_every_cut_over_the_link() -> None:
    from execution import cpulimit
    from execution import link as lk
    why = lk.unavailable_reason() or cpulimit.unavailable_reason()
    if why is not None:
        pytest.skip(why)
    r = subprocess.run([sys.executable, "benchmarks/bench_cost_model.py", "--models", "digits_cnn",
                        "--rates-mbps", "5", "--rounds", "1", "--n", "2", "--idle-ms", "0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    d = out["models"]["digits_cnn"]
    assert len(d["rates"][0]["measured_ms"]) == 10          # cuts 0..9
    assert {"cut_regret_macs", "cut_regret_measured"} <= set(out)
    assert d["fit"]["mape_unit_s1a"] < d["fit"]["mape_unit_macs_only"]
