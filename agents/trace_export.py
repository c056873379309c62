"""Export a trace policy's run folder as a runtime bundle (:mod:`runtime.trace` decides with it).

    python -m agents.trace_export runs/trace/resnet18 /tmp/b/resnet18 \
        --policy-dir agents/data/trace_policies/resnet18

The bundle is the plain one (:mod:`runtime.bundle`) with env ``QuantSplitTrace-v0`` and an
``observation.history`` entry saying which samples the caller passes (:mod:`runtime.history`).
The model.zip is read without unpickling (:func:`agents.weights.read_policy`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from system.errors import QsplitInputError, cli_main


def export_trace_run(run: str | Path, out_dir: str | Path, *, force: bool = False) -> Path:
    """Write the bundle of ``run``'s model.zip (a QuantSplitTrace-v0 PPO policy)."""
    from agents.export import _versions, actor_arrays
    from agents.trace_eval import load_trace_model
    from agents.trace_train import run_ce_input
    from runtime.bundle import check_out_path, make_contract, write_bundle
    from runtime.history import history_contract
    from system.bits import DEFAULT_BITS
    from system.codec import ActionCodec, ObservationEncoder
    from system.profiles import load_profile
    from system.trace_obs import ce_plan_width, history_names
    from system.variance import World

    run = Path(run)
    check_out_path(out_dir, force=force)
    cfg_path = run / "config.yml"
    if not cfg_path.is_file():
        raise QsplitInputError(f"{run}: no config.yml (not a trace run folder)")
    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    profile = load_profile(cfg["model"])
    if profile.sha256() != cfg.get("profile_sha256"):
        raise QsplitInputError(f"{run}: trained on another version of profile {profile.name!r}")
    world = World()
    encoder = ObservationEncoder()
    ce_input = run_ce_input(run)
    n_features = encoder.n_features + len(history_names(world.history_k)) + \
        (ce_plan_width(profile.n_units, len(DEFAULT_BITS)) if ce_input else 0)
    model = load_trace_model(str(run / "model.zip"), profile, n_features)
    hidden, action, arrays = actor_arrays(model.policy)
    contract = make_contract(
        profile=profile, encoder=encoder, codec=ActionCodec(profile.n_units, DEFAULT_BITS),
        hidden=hidden, action=action, env_id="QuantSplitTrace-v0",
        env_kwargs={"miss_penalty": cfg["hyperparams"].get("env_kwargs", {}).get(
            "miss_penalty", 1.0), "routes": cfg["qsplit"]["train_routes"]},
        source={"algo": model.algo, "num_timesteps": model.num_timesteps, **_versions()},
        history=history_contract(world.history_k, world.share_steps, ce_input))
    return write_bundle(out_dir, contract, arrays, force=force)


def publish_trace_run(run: str | Path, dest: str | Path) -> Path:
    """Copy a trace run's policies (optimizer statistics dropped: they matter only to go on
    training) and its records into ``dest``. The run is trusted: SB3's full loader reads it."""
    import shutil

    from stable_baselines3 import PPO

    from agents.callbacks import save_model_atomic
    from agents.weights import load_trusted_model

    run, out = Path(run), Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("model.zip", "bc_model.zip"):
        algo = load_trusted_model(run / name, PPO)
        pol = algo.policy
        pol.optimizer = pol.optimizer_class(pol.parameters(), lr=algo.lr_schedule(1.0),
                                            **pol.optimizer_kwargs)
        save_model_atomic(algo, out / name)
    for name in ("config.yml", "command.txt", "evaluations.json", "bc.json"):
        shutil.copyfile(run / name, out / f".{name}.tmp")
        (out / f".{name}.tmp").replace(out / name)
    return out


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(prog="python -m agents.trace_export", description=__doc__)
    ap.add_argument("run", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--force", action="store_true", help="replace an existing bundle")
    ap.add_argument("--policy-dir", type=Path, help="also copy the run's policies there "
                    "(agents/data/trace_policies/<model>)")
    a = ap.parse_args(argv)
    print(export_trace_run(a.run, a.out, force=a.force))
    if a.policy_dir:
        print(publish_trace_run(a.run, a.policy_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
