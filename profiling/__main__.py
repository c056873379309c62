"""Command line of the profiling extra: ``python -m profiling {profile,train-digits,...}``.

See the package docstring (``python -m profiling --help``) for what each command does.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import profiling
from system.errors import QsplitInputError, check_finite, cli_main
from system.loaders import parse_json
from system.profiles import ModelProfile, load_profile_file, profile_from_dict

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILES_DIR = REPO_ROOT / "system" / "data" / "profiles"


#: A profile name that is a plain file stem: it names ``<name>.json`` inside the output folder.
_STEM = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def check_profile_name(name: str, field: str = "--name") -> str:
    """Refuse a name that is not a plain file stem (a path such as ``../../x`` would write
    outside the output folder)."""
    if not _STEM.fullmatch(name) or name.endswith("."):
        raise ValueError(f"{field}: {name!r} is not a plain file stem (1-100 letters, digits, "
                         "'_', '-' or '.', not starting with '.' and without '/')")
    return name


def load_weights(model: Any, path: str) -> None:
    """Load a ``state_dict`` into ``model`` without unpickling anything (``weights_only``).

    Whatever the file holds, the outcome is the weights loaded or one line saying why not.
    """
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"--weights: no such file: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"--weights: {path} is a folder, not a weights file") from None
    except Exception as exc:
        raise ValueError(f"--weights {path}: not a state_dict that torch.load(weights_only=True) "
                         f"reads ({type(exc).__name__}); save one with "
                         "torch.save(model.state_dict(), path)") from None
    if not isinstance(state, dict):
        raise ValueError(f"--weights {path}: holds a {type(state).__name__}, not a state_dict "
                         "(a dict of tensors)")
    try:
        model.load_state_dict(state)
    except Exception as exc:
        why = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ValueError(f"--weights {path}: does not fit the model: {why}") from None


def write_profile(profile: ModelProfile, path: Path) -> Path:
    """Validate, then write a profile's JSON form (file name ``<name>.json`` in a directory).

    Measured unit times of the file it replaces are kept when the units are the same (names
    and MACs): regenerating sensitivities does not throw measurements away.
    """
    if path.suffix != ".json":
        check_profile_name(profile.name, "profile name")
        path = path / f"{profile.name}.json"
    old = None
    if not profile.time_tables and path.is_file():
        try:
            old = load_profile_file(path)
        except QsplitInputError:
            old = None          # a file that is no profile is simply replaced
    if old is not None and old.unit_names == profile.unit_names and (old.macs == profile.macs).all():
        profile = dataclasses.replace(profile, time_tables=old.time_tables,
                                      efficiency=old.efficiency)
    checked = profile_from_dict(profile.to_dict(), where=f"profile {profile.name}")
    checked.save(path)
    return path


def profile_path(arg: str) -> Path:
    """``--profile``: a shipped profile's name (its file in system/data/profiles) or a path."""
    if arg.endswith(".json"):
        return Path(arg)
    check_profile_name(arg, "--profile")
    path = PROFILES_DIR / f"{arg}.json"
    if not path.is_file():
        raise ValueError(f"--profile: no shipped profile {arg!r} ({path}); give a .json path")
    return path


def _timing_model(profile: ModelProfile, spec: str, weights: str) -> tuple[Any, Any]:
    """The network a profile describes and one input: the digits CNN with its trained weights
    and a held-out image, ResNet-18 at random init, or ``--model`` (seeded random input)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    if spec:
        model = load_factory(spec)()
        if weights:
            load_weights(model, weights)
    elif profile.name == "digits_cnn":
        from profiling import digits

        return digits.load_digits_cnn(), digits.load_split().x_val[:1]
    elif profile.name == "resnet18":
        from profiling.architectures import resnet18_module

        model = resnet18_module()
    else:
        raise ValueError(f"--model: profile {profile.name!r} needs MODULE:FACTORY for its network")
    return model.eval(), torch.randn((1, *profile.input_shape), generator=gen)


def _cmd_time_units(args: argparse.Namespace) -> int:
    from profiling import timing
    from profiling.profiler import profile_module, split_units

    path = profile_path(args.profile)
    profile = load_profile_file(path)
    if args.processor and len(args.threads) > 1:
        raise ValueError("--processor names one table: give one --threads value with it")
    idle_s = check_finite("--idle-ms", args.idle_ms, lo=0.0, hi=timing.MAX_IDLE_S * 1e3,
                          unit="ms") / 1e3
    model, x = _timing_model(profile, args.model, args.weights)
    prof = profile_module(model, profile.input_shape)
    if tuple(u.name for u in prof.units) != profile.unit_names or \
            [u.macs for u in prof.units] != profile.macs.tolist():
        raise ValueError(f"--model: its units differ from profile {profile.name}'s")
    units = split_units(prof)
    for n in args.threads:
        name = args.processor or timing.host_processor_name(n)
        t, prov = timing.time_units(units, x, threads=n, repeats=args.repeats, warmup=args.warmup,
                                    idle_s=idle_s)
        profile = timing.with_table(profile, name, t, prov)
        print(f"{name}: sum {t.sum() * 1e3:.3f} ms, whole chain "
              f"{prov['whole_chain_median_s'] * 1e3:.3f} ms, load {prov['loadavg_1min']}")
        for u, v in zip(profile.unit_names, t, strict=True):
            print(f"  {u:<12} {v * 1e6:12.1f} us")
    write_profile(profile, path)
    fit = profile.efficiency.fit if profile.efficiency is not None else {}
    print(json.dumps({"profile": str(path), "tables": sorted(profile.time_tables), "fit": fit}))
    return 0


def _cmd_import_times(args: argparse.Namespace) -> int:
    from profiling import timing

    path = profile_path(args.profile)
    profile = load_profile_file(path)
    new = timing.imported_tables(args.csv, profile, args.processor, args.tail_processor, args.note)
    profile = timing.refit(dataclasses.replace(
        profile, time_tables={**profile.time_tables, **new}))
    write_profile(profile, path)
    print(json.dumps({"profile": str(path), "imported": {
        n: {"sum_s": float(t.time_s.sum()), "provenance": t.provenance,
            "carried_fit": timing.carried_fit(profile, n)} for n, t in new.items()}}))
    return 0


def _cmd_fit_times(args: argparse.Namespace) -> int:
    from profiling import timing

    profile = load_profile_file(profile_path(args.profile))
    out = {n: timing.carried_fit(profile, n) for n in sorted(profile.time_tables)}
    fit = profile.efficiency.fit if profile.efficiency is not None else None
    print(json.dumps({"profile": profile.name, "fit": fit, "carried_fit": out}))
    return 0


def load_factory(spec: str) -> Any:
    """``package.module:attr`` or ``path/to/file.py:attr`` -> the attribute (a callable)."""
    if ":" not in spec:
        raise ValueError(f"model spec must be MODULE:FACTORY or FILE.py:FACTORY, got {spec!r}")
    mod_name, attr = spec.rsplit(":", 1)
    if mod_name.endswith(".py"):
        path = Path(mod_name)
        if not path.exists():
            raise ValueError(f"no such file: {path}")
        mspec = importlib.util.spec_from_file_location(path.stem, path)
        if mspec is None or mspec.loader is None:
            raise ValueError(f"cannot import {path}")
        module = importlib.util.module_from_spec(mspec)
        sys.modules[path.stem] = module
        mspec.loader.exec_module(module)
    else:
        module = importlib.import_module(mod_name)
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ValueError(f"{mod_name} has no attribute {attr!r}") from exc


def _cmd_profile(args: argparse.Namespace) -> int:
    import torch

    from profiling import sensitivity_sources as ss
    from profiling.architectures import digits_activation_ratio
    from profiling.profiler import model_profile, profile_module

    check_profile_name(args.name)
    factory = load_factory(args.model)
    kwargs = parse_json(args.kwargs, "--kwargs") if args.kwargs else {}
    if not isinstance(kwargs, dict):
        raise ValueError(f"--kwargs: expected a JSON object, got {args.kwargs!r}")
    model = factory(**kwargs)
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"{args.model} returned {type(model).__name__}, not a torch.nn.Module")
    if args.weights:
        load_weights(model, args.weights)
    leaf_types = [load_factory(s) for s in args.leaf]
    prof = profile_module(model, args.input_shape, leaf_types=leaf_types)
    sens_w, prov_w, _ = ss.weight_sensitivities(prof, hawq=False)   # proxy: no evidence
    sens_a, prov_a = ss.activation_sensitivities(sens_w, digits_activation_ratio(PROFILES_DIR))
    provenance = {
        "script": "python -m profiling profile " + " ".join(sys.argv[2:]),
        "torch": torch.__version__,
        "profiled": {"gmacs": round(prof.macs / 1e9, 6), "params": prof.params},
        "sensitivity": {**prov_w, **prov_a},
        "note": "proxy sensitivities: measure them with profiling.calibrate.calibrate on a "
        "profiling.chain.Chain of your own held-out data for a measured profile",
    }
    profile = model_profile(
        prof, args.name, sens_w, sens_a, "proxy", args.base_accuracy, provenance, args.input_bits
    )
    path = write_profile(profile, Path(args.out) if args.out else Path(f"{args.name}.json"))
    print(f"{path}: {len(prof.units)} units, {prof.macs / 1e9:.4f} GMACs, {prof.params} params")
    for u in profile.to_dict()["units"]:
        print(f"  {u['name']:<28} macs {u['macs']:>12} params {u['params']:>10} "
              f"out_elems {u['out_elems']:>9}")
    return 0


def _cmd_train_digits(args: argparse.Namespace) -> int:
    from profiling import digits

    record = digits.train_and_save(seed=args.seed, net=digits.check_net(args.net))
    print(json.dumps(record, indent=2, allow_nan=False))
    print(f"weights: {digits.weights_path(args.net)}")
    return 0


def _cmd_calibrate_digits(args: argparse.Namespace) -> int:
    import torch

    from profiling.digits import check_net
    from profiling.netcal import calibrate_net

    torch.set_num_threads(1)
    if not 1 <= args.per_bin <= 1000:
        raise ValueError(f"--per-bin: {args.per_bin} plans per bin is outside [1, 1000]")
    profile = calibrate_net(check_net(args.net), per_bin=args.per_bin, seed=args.seed,
                            log=lambda m: print(m, flush=True))
    path = write_profile(profile, PROFILES_DIR)
    comp = profile.compounding
    print(f"{path}: g = {comp.fit['chosen']}, safety factor {comp.fit['safety_factor']}")
    for name, sw, sa in zip(profile.unit_names, profile.sens_w, profile.sens_a, strict=True):
        print(f"  {name:<8} sens_w {sw:8.3f}  sens_a {sa:8.3f}")
    return 0


def _cmd_arch_profiles(args: argparse.Namespace) -> int:
    from profiling.architectures import ARCHS, arch_profile

    for name in args.names or list(ARCHS):
        profile = arch_profile(name, PROFILES_DIR)
        path = write_profile(profile, PROFILES_DIR)
        prov = profile.provenance
        print(f"{path}: {profile.n_units} units, {prov['profiled']['gmacs']:.3f} GMACs "
              f"(published {prov['published']['gmacs']}), {prov['profiled']['params']} params "
              f"(published {prov['published']['params']})")
    return 0


def _timing_parser(sub: argparse._SubParsersAction, name: str, text: str) -> argparse.ArgumentParser:
    """A unit-time subcommand: each one works on one profile."""
    p = sub.add_parser(name, help=text)
    p.add_argument("--profile", required=True, help="shipped profile name or profile .json path")
    return p


@cli_main(errors=(ValueError,))
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m profiling",
        description=profiling.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("profile", help="profile your own torch model into a qsplit profile JSON")
    p.add_argument("model", help="MODULE:FACTORY or FILE.py:FACTORY returning an nn.Module")
    p.add_argument("--input-shape", type=int, nargs="+", required=True, metavar="D",
                   help="input shape without the batch dimension, e.g. 3 224 224")
    p.add_argument("--name", required=True, help="profile name (the file is <name>.json)")
    p.add_argument("--base-accuracy", type=float, required=True,
                   help="top-1 accuracy of the trained model, percent")
    p.add_argument("--kwargs", default="", help="JSON object of keyword arguments for FACTORY")
    p.add_argument("--weights", default="", help="state_dict .pt (loaded with weights_only)")
    p.add_argument("--leaf", nargs="*", default=[], metavar="MODULE:CLASS",
                   help="module classes fx must not trace into (untraceable blocks)")
    p.add_argument("--input-bits", type=int, default=8)
    p.add_argument("--out", default="", help="output file or directory (default ./<name>.json)")
    p.set_defaults(func=_cmd_profile)

    p = sub.add_parser("train-digits", help="train a digits network, save weights and accuracy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--net", default="digits_cnn", help="digits_cnn or digits_resnet")
    p.set_defaults(func=_cmd_train_digits)

    p = sub.add_parser("calibrate-digits", help="measure a digits network's accuracy model")
    p.add_argument("--net", default="digits_cnn", help="digits_cnn or digits_resnet")
    p.add_argument("--per-bin", type=int, default=60,
                   help="calibration plans per bin of the additive sum (11 bins)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_calibrate_digits)

    p = sub.add_parser("arch-profiles", help="regenerate the ImageNet profiles (torchvision)")
    p.add_argument("names", nargs="*", help="subset of alexnet vgg16 resnet18 resnet50 "
                   "mobilenet_v2 (default: all)")
    p.set_defaults(func=_cmd_arch_profiles)

    p = _timing_parser(sub, "time-units", "measure each unit's time on this host into a profile")
    p.add_argument("--processor", default="", help="table name (default host-<cpu>-<threads>t)")
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="torch threads, one table each")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--idle-ms", type=float, default=0.0, help="sleep before each round of units "
                   "(timed in chain order), ms (0-10000; the idle a head or tail sees per request)")
    p.add_argument("--model", default="", help="MODULE:FACTORY of the profile's network "
                   "(digits_cnn and resnet18 need none)")
    p.add_argument("--weights", default="", help="state_dict .pt for --model")
    p.set_defaults(func=_cmd_time_units)

    p = _timing_parser(sub, "import-times", "import a measured per-unit or per-split times CSV")
    p.add_argument("--processor", required=True, help="processor that ran the units (or the head)")
    p.add_argument("--csv", required=True, help="unit,time_s rows or split,head_time_s,tail_time_s")
    p.add_argument("--tail-processor", default="", help="per-split rows: processor of the tail "
                   "column (default: --processor, which then gets the mean of both columns)")
    p.add_argument("--note", default="", help="text recorded in the table's provenance")
    p.set_defaults(func=_cmd_import_times)

    p = _timing_parser(sub, "fit-times", "print a profile's unit-time fit (R², MAPE per processor)")
    p.set_defaults(func=_cmd_fit_times)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
