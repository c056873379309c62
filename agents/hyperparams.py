"""train.py's hyperparameters: one table of every key's type and range, checked before anything
is built.

A config (rl-baselines3-zoo's schema) maps an env id to rl-zoo's own keys (``n_envs``,
``n_timesteps``, ``env_kwargs``) and the algorithm's keyword arguments; its ``qsplit:``
section holds qsplit's options. Each key is declared once in :data:`HYPERPARAMS`. A value
outside its range is refused in one line naming the key where the user wrote it
(``tiny.yml: QuantSplit-v0.n_envs`` or ``-params n_envs``), never moved into range: a bad
start costs a second, not the minutes of solving the request pools first.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agents.weights import ACTIVATIONS, activation_classes, check_net_arch
from system.errors import QsplitInputError, check_finite, check_keys, interval_text, shown

ZOO, ALGO, QSPLIT = "zoo", "algo", "qsplit"


@dataclass(frozen=True)
class Param:
    """A key's type (int, float, bool, str, mapping, policy_kwargs) and what it allows.

    ``schedule``: ``lin_<x>`` is accepted too (linear decay from x to 0; x in the range);
    ``nullable``: null (None) is accepted; ``section``: rl-zoo's keys read by train.py
    (zoo), the algorithm's arguments (algo), or the ``qsplit:`` section (qsplit).
    """

    kind: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    schedule: bool = False
    nullable: bool = False
    choices: tuple[str, ...] = ()
    section: str = ALGO


#: Every key train.py accepts, with its type and allowed range.
HYPERPARAMS: dict[str, Param] = {
    "n_envs": Param("int", 1, 256, section=ZOO),
    "n_timesteps": Param("int", 1, 1e12, section=ZOO),
    "env_kwargs": Param("mapping", section=ZOO),
    "policy": Param("str", choices=("MlpPolicy",)),
    "policy_kwargs": Param("policy_kwargs"),
    "learning_rate": Param("float", 0, 1, lo_open=True, schedule=True),
    "n_steps": Param("int", 1, 1e7),
    "batch_size": Param("int", 2, 1e7),
    "n_epochs": Param("int", 1, 1000),
    "gamma": Param("float", 0, 1),
    "gae_lambda": Param("float", 0, 1),
    "clip_range": Param("float", 0, 1, lo_open=True, schedule=True),
    "clip_range_vf": Param("float", 0, 1e6, lo_open=True, schedule=True, nullable=True),
    "normalize_advantage": Param("bool"),
    "ent_coef": Param("float", 0, 1),
    "vf_coef": Param("float", 0, 100),
    "max_grad_norm": Param("float", 0, 1e6, lo_open=True),
    "target_kl": Param("float", 0, 10, lo_open=True, nullable=True),
    "stats_window_size": Param("int", 1, 1e6),
    "train_pool": Param("int", 1, 1e7, section=QSPLIT),
    "eval_pool": Param("int", 1, 1e6, section=QSPLIT),
    "eval_seed": Param("int", 0, 2**32 - 1, section=QSPLIT),
    "eval_freq": Param("int", -1e12, 1e12, section=QSPLIT),
    "bc_epochs": Param("int", 0, 1e4, section=QSPLIT),
    "bc_batch_size": Param("int", 1, 1e6, section=QSPLIT),
    "bc_lr": Param("float", 0, 1, lo_open=True, section=QSPLIT),
    "bc_eval_every": Param("int", 0, 1e4, section=QSPLIT),
    "pool_workers": Param("int", 1, 64, section=QSPLIT),
    "pool_cache": Param("str", section=QSPLIT),
}
#: rl-zoo keys train.py does not implement (observations are normalised by the encoder).
UNSUPPORTED = ("normalize", "frame_stack", "env_wrapper", "vec_env_wrapper", "callback")
#: policy_kwargs keys train.py passes on (the MLP policy's shape and initialisation).
POLICY_KWARGS = ("net_arch", "activation_fn", "ortho_init", "share_features_extractor")
#: Seeds numpy, torch and the envs accept.
SEED_RANGE = (0, 2**32 - 1)


#: Kinds checked by type alone (and choices, where given): the type and how an error says it.
_PLAIN_KINDS: dict[str, tuple[type, str]] = {
    "bool": (bool, "true or false"), "str": (str, "a string"),
    "mapping": (dict, "a mapping of key: value")}


def check_value(key: str, value: Any, where: str) -> Any:
    """``value`` as :data:`HYPERPARAMS` allows it for ``key``; otherwise one line naming ``where``."""
    p = HYPERPARAMS[key]
    if value is None and p.nullable:
        return None
    if p.kind in _PLAIN_KINDS:
        kind_type, expected = _PLAIN_KINDS[p.kind]
        if not isinstance(value, kind_type) or (p.choices and value not in p.choices):
            raise QsplitInputError(f"{where}: expected {' or '.join(p.choices) or expected}, "
                                   f"got {shown(value)}")
        return value
    if p.kind == "policy_kwargs":
        return check_policy_kwargs(value, where)
    if p.schedule and isinstance(value, str) and value.startswith("lin_"):
        try:
            start = float(value[4:])
        except ValueError:
            start = value[4:]
        _number(p, start, f"{where} ({value})")
        return value
    return _number(p, value, where)


def _number(p: Param, value: Any, where: str) -> int | float:
    """A number in the key's range; an integer key takes an integral float (YAML's 1e5)."""
    want = "an integer" if p.kind == "int" else "a number"
    rng = interval_text(p.lo, p.hi, p.lo_open)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise QsplitInputError(f"{where}: expected {want}{' or lin_<x>' if p.schedule else ''} "
                               f"in {rng}, got {shown(value)}")
    if p.kind == "int" and isinstance(value, float) and math.isfinite(value) \
            and not value.is_integer():
        raise QsplitInputError(f"{where}: expected an integer in {rng}, got {shown(value)}")
    x = check_finite(where, value, lo=p.lo, hi=p.hi, lo_open=p.lo_open)
    return int(value) if p.kind == "int" else x


def check_section(values: object, section: Iterable[str], at: Callable[[str], str],
                  where: str) -> dict[str, Any]:
    """Every key of a mapping checked against the table's keys of ``section``."""
    if not isinstance(values, dict):
        raise QsplitInputError(f"{where}: expected a mapping of key: value, got "
                               f"{type(values).__name__}")
    sections = set(section)
    known = sorted(k for k, p in HYPERPARAMS.items() if p.section in sections)
    for key in values:
        if key in UNSUPPORTED:
            raise QsplitInputError(
                f"{at(key)}: not supported by train.py (observations are normalised by the "
                "encoder; use rl_zoo3 for wrappers)")
        if key not in known:
            name = key if isinstance(key, str) and key.isprintable() else shown(key)
            raise QsplitInputError(f"{at(name)}: unknown key; known: {known}")
    return {k: check_value(k, v, at(k)) for k, v in values.items()}


def check_policy_kwargs(value: Any, where: str) -> dict[str, Any]:
    """policy_kwargs (``dict(...)`` text or a mapping): net_arch, activation, init, sharing."""
    if isinstance(value, str):
        value = safe_eval(value, where)
    if not isinstance(value, dict):
        raise QsplitInputError(f"{where}: expected dict(...) of {list(POLICY_KWARGS)}, got "
                               f"{shown(value)}")
    out = dict(check_keys(where, value, [], POLICY_KWARGS))
    if "net_arch" in out:
        out["net_arch"] = check_net_arch(out["net_arch"], f"{where}.net_arch")
    if "activation_fn" in out:
        classes = activation_classes()
        fn = classes.get(out["activation_fn"], out["activation_fn"]) \
            if isinstance(out["activation_fn"], str) else out["activation_fn"]
        if fn not in classes.values():
            raise QsplitInputError(f"{where}.activation_fn: expected one of "
                                   f"nn.{', nn.'.join(ACTIVATIONS)}, got {shown(out['activation_fn'])}")
        out["activation_fn"] = fn
    for key in ("ortho_init", "share_features_extractor"):
        if key in out and not isinstance(out[key], bool):
            raise QsplitInputError(f"{where}.{key}: expected True or False, got {shown(out[key])}")
    return out


def check_seed(seed: int, where: str = "--seed") -> int:
    """A seed numpy and torch accept (a negative one means: draw one)."""
    if seed > SEED_RANGE[1]:
        raise QsplitInputError(f"{where}: {seed} is outside the allowed range "
                               f"{list(SEED_RANGE)} (negative: draw one)")
    return seed


def prepare_hyperparams(hyper: dict[str, Any], overrides: dict[str, Any] | None = None,
                        where: str = "hyperparameters") -> tuple[dict[str, Any], dict[str, Any]]:
    """Check the env-id mapping (with ``-params`` overrides) and split it into the algorithm's
    keyword arguments and rl-zoo's keys (n_envs, n_timesteps, env_kwargs)."""
    from stable_baselines3.common.utils import ConstantSchedule, LinearSchedule

    cli = dict(overrides or {})

    def at(key: str) -> str:
        return f"-params {key}" if key in cli else f"{where}.{key}"

    h = check_section({**hyper, **cli}, (ZOO, ALGO), at, where)
    meta = {"n_envs": h.pop("n_envs", 1), "n_timesteps": h.pop("n_timesteps", None),
            "env_kwargs": dict(h.pop("env_kwargs", {}) or {})}
    if meta["n_envs"] * h.get("n_steps", 2048) < 2:
        raise QsplitInputError(f"{at('n_steps')}: n_steps x n_envs must be at least 2 (one "
                               "rollout is normalised)")
    for key in ("learning_rate", "clip_range", "clip_range_vf"):
        v = h.get(key)
        if isinstance(v, str):
            h[key] = LinearSchedule(float(v[4:]), 0.0, 1.0)
        elif isinstance(v, (int, float)):
            h[key] = ConstantSchedule(float(v))
    return h, meta


def check_env_kwargs(given: object, known: Iterable[str], where: str) -> dict[str, Any]:
    """Env arguments with known names only (their values are the env's to check)."""
    return dict(check_keys(where, given or {}, [], known))


# ----------------------------------------------------------------------------- expressions

_SAFE_NAMES: dict[str, Any] = {}


def _safe_names() -> dict[str, Any]:
    if not _SAFE_NAMES:
        _SAFE_NAMES.update({**activation_classes(), "True": True, "False": False, "None": None})
    return _SAFE_NAMES


def safe_eval(text: str, where: str) -> Any:
    """Evaluate a config expression such as ``dict(net_arch=[64, 64], activation_fn=nn.Tanh)``.

    rl_zoo3 ``eval``s these strings; here only literals, ``dict(...)`` calls and the
    activations of :data:`agents.weights.ACTIVATIONS` are allowed, so a config cannot run code.
    """
    def conv(node: ast.AST) -> Any:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "dict" and not node.args:
            return {kw.arg: conv(kw.value) for kw in node.keywords}
        if isinstance(node, (ast.Attribute, ast.Name)):
            name = ast.unparse(node)
            if name in _safe_names():
                return _safe_names()[name]
            raise QsplitInputError(f"{where}: name {name!r} is not allowed in a config")
        if isinstance(node, ast.Dict):
            return {conv(k): conv(v) for k, v in zip(node.keys, node.values, strict=True)}
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [conv(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -conv(node.operand)
        if isinstance(node, ast.Constant):
            return node.value
        raise QsplitInputError(f"{where}: unsupported expression {ast.unparse(node)[:80]!r}")

    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise QsplitInputError(f"{where}: cannot parse {text[:80]!r}") from None
    try:
        return conv(tree.body)
    except RecursionError:
        raise QsplitInputError(f"{where}: expression nested too deeply") from None
    except TypeError:
        raise QsplitInputError(f"{where}: cannot evaluate {text[:80]!r}") from None


def parse_kv(items: list[str] | None, where: str) -> dict[str, Any]:
    """rl-zoo's ``key:value`` arguments; a value that is not a literal is taken as a string."""
    out: dict[str, Any] = {}
    for item in items or []:
        if ":" not in item:
            raise QsplitInputError(f"{where}: expected key:value, got {shown(item)}")
        key, value = item.split(":", 1)
        try:
            out[key] = safe_eval(value, f"{where} {key}")
        except QsplitInputError:
            out[key] = value
    return out
