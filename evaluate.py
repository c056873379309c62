"""Leaderboard: every decider on the same fixed requests, scored against the exact optimum.

    python evaluate.py --suite default                      # suite's deciders, plots, tables
    python evaluate.py --suite small --decider optimal --decider ppo:runs/ppo/QuantSplit-v0_1
    python evaluate.py --replay out/eval/default/records.csv  # re-cost every row, compare
    python evaluate.py --list                               # the suites and decider specs
    python evaluate.py --suite trace_variance [--traces DIR]  # when the channel moves (§8)

A suite (``configs/eval/<name>.yaml``, :mod:`leaderboard.suites`) fixes a model profile, the
deciders and cases of seeded requests. Every decider decides the same requests; each plan is
costed by the cost model and compared with the exact optimum: regret = cost / optimal cost - 1.
A plan over its accuracy budget is a violation: counted, flagged, its regret still reported.

Output folder (default ``out/eval/<suite>``): ``records.csv`` (one row per request and
decider, every request field at full precision, so ``--replay`` can re-cost it),
``summary.json``, ``summary.md`` (tables per decider, per case, and the seeds' claims of
``leaderboard/claims.yaml`` measured side by side) and PNG plots ``eval_*.png``. The folder
is written as a whole (filled beside it, then switched in one step): an interrupt leaves the
previous one intact. An existing ``--out`` that is not such a folder is refused. Bad input
(unknown decider, a run folder without a model, a suite with unknown keys) prints one line
and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents.policy import known_specs
from leaderboard.replay import replay_csv
from leaderboard.run import evaluate_suite
from leaderboard.suites import ROOT, check_n_requests, suite_names, suites_for
from leaderboard.summary import compare_figures, expected_figures, markdown, summary_json
from leaderboard.variance import is_trace_suite, run_trace_suite
from leaderboard.variance import markdown as trace_markdown
from system.atomic import atomic_write_text
from system.errors import QsplitInputError, cli_main
from system.evidence import WIDTH_MODES
from system.loaders import parse_json, read_text
from system.profiles import load_profile


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="decider specs: " + ", ".join(known_specs()))
    ap.add_argument("--suite", default="default", help="suite name (configs/eval) or YAML path")
    ap.add_argument("--decider", action="append", metavar="SPEC",
                    help="decider to evaluate (repeat); default: the suite's list")
    ap.add_argument("--ppo-run", type=Path, metavar="RUN",
                    help="run folder (holding model.zip) to use for the suite's `ppo` decider "
                         "instead of the committed default policy")
    ap.add_argument("--out", type=Path,
                    help="output folder (default out/eval/<suite>), written as a whole; an "
                         "existing one is replaced only if it is an evaluation output")
    ap.add_argument("--requests", type=int, metavar="N",
                    help="N requests per case instead of the suite's counts (quick looks)")
    ap.add_argument("--widths", choices=list(WIDTH_MODES), default=None,
                    help="plan over the widths the profile's evidence backs (default) or over "
                    "every width (extrapolate); overrides the suite's `widths`")
    ap.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--replay", type=Path, metavar="CSV",
                    help="re-cost every row of a records.csv and compare; exit 1 on a mismatch")
    ap.add_argument("--model", help="plan for this profile instead of the suite's, or 'all' (every "
                    "shipped profile, one output folder each); with --replay: the records' "
                    "profile (default: from summary.json)")
    ap.add_argument("--expected-out", type=Path, metavar="JSON",
                    help="also write the machine-independent figures (tests' expected JSON)")
    ap.add_argument("--check", type=Path, metavar="JSON",
                    help="compare the machine-independent figures with an --expected-out JSON; "
                         "exit 1 when they differ")
    ap.add_argument("--traces", type=Path, metavar="DIR", help="trace_variance suite: evaluate on "
                    "this folder of traces (any supported format) instead of the suite's routes")
    ap.add_argument("--list", action="store_true", help="list the suites and decider specs")
    return ap


def _write(path: Path, text: str) -> None:
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise QsplitInputError(f"--expected-out: cannot write {path}: {exc.strerror or exc}") from None


def _replay(csv_path: Path, model: str | None) -> int:
    n, bad = replay_csv(csv_path, load_profile(model) if model else None)
    for line in bad[:20]:
        print(line)
    print(f"replay: {n - len(bad)} of {n} rows give the same figures")
    return 1 if bad else 0


def _check(summary: dict, want: dict, path: Path) -> int:
    diffs = compare_figures(expected_figures(summary), want)
    for line in diffs[:20]:
        print(f"differs: {line}")
    print(f"check against {path}: "
          f"{'the figures match' if not diffs else f'{len(diffs)} figures differ'}")
    return 1 if diffs else 0


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 on bad input)."""
    args = _parser().parse_args(argv)
    try:
        if args.list:
            print("suites:", ", ".join(suite_names()))
            print("deciders:", ", ".join(known_specs()))
            return 0
        if args.replay is not None:
            return _replay(args.replay, args.model)
        if args.requests is not None:
            check_n_requests("--requests", args.requests)
        want = None
        if args.check:
            want = parse_json(read_text(args.check, "--check"), f"--check {args.check.name}")
        if is_trace_suite(args.suite):
            out = args.out or ROOT / "out" / "eval" / Path(args.suite).stem
            figs = run_trace_suite(args.suite, out, args.traces, args.model and [args.model],
                                   args.requests, not args.no_plots,
                                   lambda s: print(s, file=sys.stderr))
            print(trace_markdown(figs) + f"\nwrote {out}")
            return 0
        suites = suites_for(args.suite, args.model, args.widths)
        if len(suites) > 1 and (args.expected_out or args.check):
            raise QsplitInputError("--expected-out, --check: one model at a time, not --model all")
        code = 0
        for suite in suites:
            out = (args.out / suite.model if len(suites) > 1 else args.out) if args.out \
                else ROOT / "out" / "eval" / suite.name
            summary = evaluate_suite(suite, args.decider, out, plots=not args.no_plots,
                                     progress=not args.quiet, n_requests=args.requests,
                                     log=lambda s: print(s, file=sys.stderr), ppo_run=args.ppo_run)
            if args.expected_out:
                _write(args.expected_out, summary_json(expected_figures(summary), "--expected-out"))
            print(markdown(summary))
            print(f"wrote {out}")
            code = max(code, _check(summary, want, args.check) if args.check else 0)
        return code
    except KeyboardInterrupt:
        print("interrupted: the output folder was left as it was", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
