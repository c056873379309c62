"""agents.sweep: a real 2-trial sweep on a local Ray with tiny budgets, its run folders and
results table; the results logic on its own; bad flags refused in one line."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from test_train import TINY

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("ray.tune")

from agents.sweep import COLUMNS, main, results_rows, write_results  # noqa: E402


def test_two_trial_sweep_on_local_ray(tmp_path: Path) -> None:
    conf = tmp_path / "tiny.yml"
    conf.write_text(yaml.safe_dump(TINY))      # the tests' one tiny training config
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "agents.sweep", "--models", "digits_cnn", "--seeds", "2",
           "-conf", str(conf), "--held-out", "200", "--out", str(out)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [row["seed"] for row in rows] != [] and sorted(row["seed"] for row in rows) == ["0", "1"]
    assert [row["best"] for row in rows].count("True") == 1
    for row in rows:
        run = Path(row["run"])
        for name in ("config.yml", "command.txt", "env_kwargs.json", "model.zip",
                     "best_model.zip", "evaluations.json", "bc.json", "test.json"):
            assert (run / name).is_file(), (run, name)
        assert any((run / "tb").iterdir())
        trial_conf = yaml.safe_load((run.parent.parent / "config.yml").read_text())
        assert trial_conf["QuantSplit-v0"] == TINY["QuantSplit-v0"]   # the default config as is
        assert float(row["test_regret_mean"]) >= 0 and row["test_violations"] == "0"
    assert "| digits_cnn | 0 |" in (out / "results.md").read_text()
    # a finished sweep resumes to the same table
    r2 = subprocess.run([sys.executable, "-m", "agents.sweep", "--resume", "-conf", str(conf),
                         "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert list(csv.DictReader((out / "results.csv").open())) == rows


def _result(model: str, seed: int, regret: float, violations: int) -> SimpleNamespace:
    cfg = {"trial": {"model": model, "seed": seed, "learning_rate": 1e-4, "width": 256,
                     "train_pool": 80000, "bc_epochs": 60}}
    metrics = {"done": True, "test_regret_mean": regret, "test_regret_p95": 2 * regret,
               "test_violations": violations, "val_regret_mean": regret, "steps": 10,
               "wall_s": 1.0, "run": f"/r/{model}{seed}"}
    return SimpleNamespace(config=cfg, metrics=metrics)


def test_best_trial_per_model_has_no_violations_and_least_regret(tmp_path: Path) -> None:
    grid = [_result("a", 0, 0.01, 0), _result("a", 1, 0.001, 3), _result("a", 2, 0.005, 0),
            _result("b", 0, 0.2, 0), SimpleNamespace(config={"trial": {}}, metrics={"done": False})]
    rows = results_rows(grid)
    assert [(r["model"], r["seed"], r["best"]) for r in rows] == [
        ("a", 1, False), ("a", 2, True), ("a", 0, False), ("b", 0, True)]
    csv_path, md_path = write_results(rows, tmp_path)
    got = list(csv.DictReader(csv_path.open()))
    assert list(got[0]) == list(COLUMNS) and len(got) == 4
    assert "0.500%" in md_path.read_text()


@pytest.mark.parametrize(("argv", "needle"), [
    (["--models", "nonet"], "--models: unknown profile 'nonet'"),
    (["--models", "resnet18", "digits_cnn", "--search"], "--search: give one model"),
    (["--seeds", "0"], "--seeds: 0 is outside the allowed range"),
    (["--resume", "--out", "/nonexistent/sweep"], "--resume: no sweep in"),
])
def test_bad_flags_are_one_line_errors(argv: list[str], needle: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


def test_out_holding_other_files_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mine.txt").write_text("keep")
    assert main(["--models", "digits_cnn", "--out", str(tmp_path)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "keep"


def test_a_trial_config_changes_only_its_values(tmp_path: Path) -> None:
    from agents.sweep import _base_values, _trial_config_file

    conf = tmp_path / "tiny.yml"
    conf.write_text(yaml.safe_dump(TINY))
    base = _base_values(str(conf))
    assert base == {"learning_rate": 3e-4, "width": 32, "train_pool": 300, "bc_epochs": 2}
    wide = yaml.safe_load(_trial_config_file(TINY, {**base, "width": 128, "bc_epochs": 5},
                                             tmp_path / "t" / "r" / "config.yml").read_text())
    assert wide["QuantSplit-v0"]["policy_kwargs"] == "dict(net_arch=dict(pi=[128, 64], vf=[32, 32]))"
    assert wide["qsplit"]["QuantSplit-v0"]["bc_epochs"] == 5


def test_search_needs_an_actor_list_to_rewrite(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    plain = {**TINY, "QuantSplit-v0": {k: v for k, v in TINY["QuantSplit-v0"].items()
                                       if k != "policy_kwargs"}}
    conf = tmp_path / "plain.yml"
    conf.write_text(yaml.safe_dump(plain))
    assert main(["--models", "digits_cnn", "--search", "-conf", str(conf),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--search:" in err and "net_arch=dict(pi=[...])" in err and "\n" not in err
