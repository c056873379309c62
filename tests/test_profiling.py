"""Tests of the profiling extra: shipped profiles, the profiler, quantizers, calibration."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import math
import pkgutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from torch import nn  # noqa: E402

import profiling  # noqa: E402
import system.accuracy  # noqa: E402
import system.bits  # noqa: E402
import system.plan  # noqa: E402
import system.profiles  # noqa: E402
from profiling import calibrate as cal_mod  # noqa: E402
from profiling import digits, quantize, safety  # noqa: E402
from profiling import sensitivity_sources as ss  # noqa: E402
from profiling.__main__ import main as cli_main  # noqa: E402
from profiling.chain import Chain  # noqa: E402
from profiling.profiler import model_profile, profile_module, split_units  # noqa: E402
from system.accuracy import drop_pp, plan_drop_pp, plans_drop_pp  # noqa: E402
from system.bits import DEFAULT_BITS, q_noise  # noqa: E402
from system.errors import QsplitInputError  # noqa: E402
from system.plan import Plan, plans_to_arrays  # noqa: E402
from system.profiles import load_profile, profile_from_dict  # noqa: E402

PROFILES = Path(__file__).resolve().parent.parent / "system" / "data" / "profiles"

# torchvision's documented figures (Weights.meta of IMAGENET1K_V1: "_ops" GMACs, "num_params").
# The task brief quotes AlexNet 0.714 / 61.1M, VGG-16 15.5 / 138.4M, ResNet-18 1.82 / 11.69M,
# ResNet-50 4.11 / 25.56M, MobileNetV2 0.30 / 3.50M: all within 1% of these.
PUBLISHED = {
    "alexnet": (0.714, 61_100_840),
    "vgg16": (15.47, 138_357_544),
    "resnet18": (1.814, 11_689_512),
    "resnet50": (4.089, 25_557_032),
    "mobilenet_v2": (0.301, 3_504_872),
}
ALL_PROFILES = ("digits_cnn", "digits_resnet", *PUBLISHED)


def _load(name: str) -> dict:
    return json.loads((PROFILES / f"{name}.json").read_text())


# --------------------------------------------------------------------------- shipped profiles
@pytest.mark.parametrize("name", list(PUBLISHED))
def test_arch_profile_matches_published_macs_and_params(name: str) -> None:
    prof = _load(name)
    gmacs, params = PUBLISHED[name]
    total_macs = sum(u["macs"] for u in prof["units"])
    total_params = sum(u["params"] for u in prof["units"])
    assert total_macs / 1e9 == pytest.approx(gmacs, rel=0.02)
    assert total_params == pytest.approx(params, rel=0.02)
    assert prof["input_shape"] == [3, 224, 224]


@pytest.mark.parametrize("name", ALL_PROFILES)
def test_shipped_profile_is_valid_and_strict(name: str) -> None:
    prof = _load(name)
    profile_from_dict(prof, where=name)
    assert prof["name"] == name
    assert prof["in_elems"] == math.prod(prof["input_shape"])
    assert prof["input_bits"] == 8
    assert prof["units"][-1]["sens_a"] == 0
    for u in prof["units"]:
        if u["params"] == 0:
            assert u["sens_w"] == 0
    # several cut points with different tensor sizes: a real partitioning target
    assert len({u["out_elems"] for u in prof["units"]}) >= 4


def test_sensitivity_sources_are_flagged() -> None:
    assert _load("digits_cnn")["sensitivity_source"] == "measured"
    assert _load("digits_resnet")["sensitivity_source"] == "measured"
    assert _load("resnet18")["sensitivity_source"] == "hawq_v3"
    for name in ("alexnet", "vgg16", "resnet50", "mobilenet_v2"):
        assert _load(name)["sensitivity_source"] == "proxy"


def test_resnet18_units_are_blocks_and_w4_scale_gives_hawq_drop() -> None:
    prof = load_profile("resnet18")
    names = list(prof.unit_names)
    blocks = [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert names == ["conv1", "maxpool", *blocks, "avgpool", "fc"]
    # HAWQ-V3 W4A4 setting: the 8 blocks at 4 bits, stem conv and fc at 8 bits -> 3.02 pp
    w4 = Plan(prof.n_units, tuple(8 if n in ("conv1", "fc") else 4 for n in names), 32)
    assert plan_drop_pp(prof, w4) == pytest.approx(71.47 - 68.45, rel=1e-6)


def test_hawq_constants_follow_the_law_and_proxy_fit() -> None:
    c = ss.hawq_layer_constants()
    assert len(c) == 19 and (c > 0).all()
    law = ss.fit_proxy_law()
    assert law["b"] < 0 < law["g"]  # early layers weigh more per parameter, large layers more
    assert 0.6 < law["r2"] < 0.9


# --------------------------------------------------------------------------- profiler
class _Small(nn.Module):
    """conv 1->2 3x3 on 4x4 (288 MACs), ReLU, 2x2 max-pool, flatten, linear 8->3 (24 MACs)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.act(self.conv(x))), 1))


def test_profiler_hand_checked_small_model() -> None:
    prof = profile_module(_Small(), (1, 4, 4))
    got = [(u.name, u.macs, u.params, u.out_elems) for u in prof.units]
    assert got == [
        ("conv", 2 * 1 * 9 * 4 * 4, 2 * 9 + 2, 2 * 4 * 4),  # ReLU merged into the conv
        ("pool", 0, 0, 2 * 2 * 2),  # flatten merged into the pool
        ("fc", 8 * 3, 8 * 3 + 3, 3),
    ]
    assert prof.in_elems == 16 and prof.params == prof.total_params


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.b(torch.relu(self.a(h))))  # no cut inside the block
        return self.head(h.flatten(1))


def test_profiler_keeps_a_residual_block_whole_and_split_units_reproduces() -> None:
    model = _Residual().eval()
    prof = profile_module(model, (1, 4, 4))
    assert [u.name for u in prof.units] == ["stem", "a", "head"]
    assert prof.units[1].macs == 2 * 4 * 4 * 9 * 16  # both convs of the block
    x = torch.randn(5, 1, 4, 4)
    h = x
    with torch.no_grad():
        for unit in split_units(prof):
            h = unit(h)
        assert torch.allclose(h, model(x), atol=1e-6)


def test_profiler_on_the_digits_cnn() -> None:
    prof = profile_module(digits.build_digits_cnn(), digits.INPUT_SHAPE)
    assert [u.name for u in prof.units] == [
        "conv1", "conv2", "pool1", "conv3", "conv4", "pool2", "fc1", "fc2", "fc3",
    ]  # fmt: skip
    assert prof.units[1].macs == 16 * 32 * 9 * 64
    assert prof.params == prof.total_params


class _Skip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)  # the input stays alive to the end: no cut


class _Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        return y, y


class _Branchy(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: not traceable
            return x
        return -x


def test_bad_modules_and_shapes_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="no valid cut"):
        profile_module(_Skip(), (1, 4, 4))
    with pytest.raises(ValueError, match=r"no valid cut.*single tensor"):
        profile_module(_Pair(), (1, 4, 4))
    with pytest.raises(ValueError, match=r"input shape \[3, 8, 8\] does not fit"):
        profile_module(digits.build_digits_cnn(), (3, 8, 8))
    with pytest.raises(ValueError, match="input shape"):
        profile_module(digits.build_digits_cnn(), (1, 8, 8, 8))
    with pytest.raises(ValueError, match="positive ints"):
        profile_module(digits.build_digits_cnn(), (1, 0, 8))
    with pytest.raises(ValueError, match="cannot trace"):
        profile_module(_Branchy(), (1, 4, 4))


def test_profile_with_missing_sensitivities_is_rejected() -> None:
    prof = _load("digits_cnn")
    broken = copy.deepcopy(prof)
    del broken["units"][2]["sens_a"]
    with pytest.raises(ValueError, match=r"units\[2\]: sensitivities missing \(sens_a"):
        profile_from_dict(broken)
    broken = copy.deepcopy(prof)
    broken["units"][0]["sens_w"] = None
    with pytest.raises(ValueError, match=r"units\[0\]: sensitivities missing \(sens_w"):
        profile_from_dict(broken)
    broken = copy.deepcopy(prof)
    broken["extra"] = 1
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['extra'\]"):
        profile_from_dict(broken)
    mprof = profile_module(_Small(), (1, 4, 4))
    with pytest.raises(ValueError, match="sensitivities missing"):
        model_profile(mprof, "small", [1.0], [1.0, 1.0, 0.0], "proxy", 90.0, {})


def test_cli_profile_writes_a_valid_profile(tmp_path: Path) -> None:
    src = tmp_path / "mynet.py"
    src.write_text(
        "from torch import nn\n"
        "def make(width=4):\n"
        "    return nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), nn.MaxPool2d(2),\n"
        "                         nn.Flatten(), nn.Linear(width * 3 * 3, 10))\n"
    )
    out = tmp_path / "out"
    rc = cli_main([
        "profile", f"{src}:make", "--input-shape", "3", "8", "8", "--name", "mynet",
        "--base-accuracy", "90", "--kwargs", '{"width": 6}', "--out", str(out),
    ])  # fmt: skip
    assert rc == 0
    prof = json.loads((out / "mynet.json").read_text())
    profile_from_dict(prof)
    assert prof["sensitivity_source"] == "proxy"
    assert [u["macs"] for u in prof["units"]] == [6 * 3 * 9 * 36, 0, 54 * 10]
    assert cli_main(["profile", f"{src}:make", "--input-shape", "1", "8", "8", "--name",
                     "x", "--base-accuracy", "90", "--out", str(out)]) == 2  # fmt: skip


# --------------------------------------------------------------------------- quantizers, law
def test_weight_quantizer_levels_and_noise_power() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(8, 4, 3, 3, generator=gen)
    for bits in (2, 3, 4):
        wq = quantize.quantize_weight(w, bits)
        for c in range(w.shape[0]):
            levels = torch.unique(wq[c])
            assert len(levels) <= 2**bits
            m = w[c].abs().max()
            assert wq[c].abs().max() <= m + 1e-6  # symmetric grid spans [-m, m]
    w = torch.rand(4, 100_000, generator=gen) * 2 - 1
    for bits in (3, 6):
        step = 2 * w.abs().amax(1, keepdim=True) / (2**bits - 1)
        mse = ((quantize.quantize_weight(w, bits) - w) ** 2 / step**2).mean()
        assert mse.item() == pytest.approx(1 / 12, rel=0.05)  # RTN: step^2 / 12
        sr = quantize.quantize_weight(w, bits, torch.Generator().manual_seed(1))
        assert (sr - w).mean().abs().item() < 1e-3  # stochastic rounding is unbiased
    assert quantize.quantize_weight(w, 32) is w


def test_activation_quantizer_per_request_affine() -> None:
    x = torch.rand(3, 4, 5, 5) * torch.tensor([1.0, 5.0, 20.0]).view(3, 1, 1, 1)
    xq = quantize.quantize_activation(x, 3)
    for i in range(3):
        assert len(torch.unique(xq[i])) <= 8
        assert xq[i].min().item() == pytest.approx(x[i].min().item(), abs=1e-5)
        assert xq[i].max().item() == pytest.approx(x[i].max().item(), rel=1e-5)


def test_fit_through_origin_recovers_a_law() -> None:
    bits = [2, 3, 4, 6, 8]
    sens, used = cal_mod.fit_through_origin(bits, list(3.0 * q_noise(bits)), cap_pp=10)
    assert sens == pytest.approx(3.0) and used == bits
    sens, used = cal_mod.fit_through_origin(bits, [50.0, 1.0, 0.2, 0.01, 0.0], cap_pp=5)
    assert 2 not in used and sens > 0


def test_safety_factor_and_safe_rate() -> None:
    pred = np.array([0.4, 0.9, 1.5, 3.0])
    meas = np.array([0.45, 1.1, 1.2, 2.0])
    assert safety.safe_rate(pred, meas) == pytest.approx(9 / 10)  # 1/1, 1/2, 3/3, 4/4
    assert safety.safe_rate(pred, meas, (0.5, 1.0, 2.0)) == pytest.approx(5 / 6)
    k = safety.fit_safety_factor(pred, meas, target=1.0)
    assert safety.safe_rate(k * pred, meas) == 1.0 and k == pytest.approx(1.12)


# --------------------------------------------------------------------------- digits model
def test_committed_digits_model_accuracy_as_recorded() -> None:
    model = digits.load_digits_cnn()
    split = digits.load_split()
    acc = digits.accuracy_pct(model, split.x_test, split.y_test)
    record = digits.load_train_record()
    assert acc == record["test_accuracy_pct"]
    assert acc == _load("digits_cnn")["base_accuracy_pct"]
    assert acc > 95.0
    sizes = split.sizes()
    assert sizes == record["split_sizes"] and sum(sizes.values()) == 1797


def test_digits_splits_are_disjoint() -> None:
    split = digits.load_split()
    rows = {
        name: {tuple(r.flatten().tolist()) for r in x}
        for name, x in (("tr", split.x_train), ("ca", split.x_calib), ("va", split.x_val))
    }
    # the digits data holds a few exact duplicate images; the split is by index, so allow
    # only those
    assert len(rows["tr"] & rows["ca"]) <= 3 and len(rows["tr"] & rows["va"]) <= 3
    assert len(rows["ca"] & rows["va"]) <= 3


def test_calibration_reproducible_with_a_seed() -> None:
    torch.set_num_threads(1)
    model = digits.load_digits_cnn()
    prof = profile_module(model, digits.INPUT_SHAPE)
    split = digits.load_split()
    x, y = split.x_calib[:120], split.y_calib[:120]

    def run(seed: int) -> tuple[list[float], list[float]]:
        cal = cal_mod.calibrate(Chain(split_units(prof), x, y), bits=(2, 3), n_seeds=2, seed=seed)
        return cal.sens_w, cal.sens_a

    first = run(3)
    assert first == run(3)
    assert first != run(4)
    assert len(first[0]) == len(prof.units) and first[1][-1] == 0.0
    # the model's weights are untouched by calibration
    assert digits.accuracy_pct(model, split.x_test, split.y_test) == _load("digits_cnn")[
        "base_accuracy_pct"
    ]


def test_digits_profile_provenance_keeps_data_apart() -> None:
    prov = _load("digits_cnn")["provenance"]
    assert prov["split_sizes"]["calib"] > 0 and prov["split_sizes"]["val"] > 0
    assert "least squares through the origin" in prov["calibration"]["fit"]
    fit = _load("digits_cnn")["compounding"]["fit"]
    assert fit["safety_factor"] >= 1.0 and fit["data"].startswith("calibration half")


def test_plan_prediction_matches_design_law() -> None:
    prof = load_profile("digits_cnn")
    sw, sa = prof.sens_w, prof.sens_a
    plan = Plan(3, (4, 8, 32), 6)
    want = sw[0] * q_noise(4) + sw[1] * q_noise(8) + sw[2] * q_noise(32) + sa[2] * q_noise(6)
    assert plans_drop_pp(sw, sa, [plan])[0] == pytest.approx(want, rel=1e-15)
    # q(32) = (2^32 - 1)^-2, about 5e-20: a float plan's predicted drop is that small, not 0
    assert plans_drop_pp(sw, sa, [Plan(9, (32,) * 9, 2)])[0] < 1e-15  # device-only, float
    assert plans_drop_pp(sw, sa, [Plan(0, (), 2)])[0] == 0.0  # server-only


@pytest.mark.slow
def test_validation_on_held_out_half_small() -> None:
    """A reduced validation run on the simulated quantizer (the benchmark does the full one)."""
    from profiling.netcal import VAL_PER_BIN, validate_net

    torch.set_num_threads(1)
    res = validate_net(load_profile("digits_cnn"), "digits_cnn", per_bin=[3] * len(VAL_PER_BIN))
    assert res["plans"] == 3 * len(VAL_PER_BIN)
    assert res["after"]["spearman"] > 0.7


def test_activation_proxy_ratio_ignores_the_safety_factor(tmp_path: Path) -> None:
    """Recalibrating the digits CNN (another k) must not change the ImageNet profiles."""
    from profiling.architectures import digits_activation_ratio

    shipped = json.loads((PROFILES / "digits_cnn.json").read_text())
    rhos = []
    for k in (1.0, 1.19, 1.91, 3.7):
        prof = copy.deepcopy(shipped)
        for u in prof["units"]:
            u["sens_w"] *= k
            u["sens_a"] *= k
        (tmp_path / "digits_cnn.json").write_text(json.dumps(prof))
        rhos.append(digits_activation_ratio(tmp_path))
    assert len(set(rhos)) == 1
    for name in PUBLISHED:        # the shipped profiles were made with this ratio
        prov = json.loads((PROFILES / f"{name}.json").read_text())["provenance"]
        assert prov["sensitivity"]["rho"] == rhos[0], name


# --------------------------------------------------------------------------- one model
SYSTEM_MODULES = (system.bits, system.accuracy, system.plan, system.profiles)
#: The planner's model as system/ defines it; profiling must use these objects, not copies.
SYSTEM_MODEL = {
    "q_noise": system.bits.q_noise,
    "DEFAULT_BITS": system.bits.DEFAULT_BITS,
    "drop_pp": system.accuracy.drop_pp,
    "plans_drop_pp": system.accuracy.plans_drop_pp,
    "plan_drop_pp": system.accuracy.plan_drop_pp,
    "compound_pp": system.accuracy.compound_pp,
    "Plan": system.plan.Plan,
    "NO_ACT_BITS": system.plan.NO_ACT_BITS,
    "ModelProfile": system.profiles.ModelProfile,
    "profile_from_dict": system.profiles.profile_from_dict,
    "load_profile_file": system.profiles.load_profile_file,
    "PROFILE_FORMAT": system.profiles.PROFILE_FORMAT,
}
#: Names a second q(b), drop law, plan, bit set or profile validator would go by.
OLD_COPIES = {"q_law", "q_table", "predict_pp", "predicted_drop_pp", "validate_profile",
              "BIT_SET", "PROFILE_KEYS", "UNIT_KEYS", "SENSITIVITY_SOURCES"}


def _profiling_modules() -> list:
    names = [m.name for m in pkgutil.iter_modules(profiling.__path__)]
    return [importlib.import_module(f"profiling.{n}") for n in names]


def test_profiling_holds_no_second_copy_of_the_model() -> None:
    """q(b), the bit set, the drop law, the plan and the profile schema come from system/."""
    modules = {m.__name__.split(".")[-1]: m for m in _profiling_modules()}
    for mod in modules.values():
        for name, obj in vars(mod).items():
            if name in SYSTEM_MODEL:
                assert obj is SYSTEM_MODEL[name], f"{mod.__name__}.{name} is not system's"
            if name in OLD_COPIES:
                assert any(vars(m).get(name) is obj for m in SYSTEM_MODULES), (
                    f"{mod.__name__}.{name} is a second copy")
            own = getattr(obj, "__module__", None) == mod.__name__
            if own and dataclasses.is_dataclass(obj):
                fields = {f.name for f in dataclasses.fields(obj)}
                assert "cut" not in fields, f"{mod.__name__}.{name} is a second plan type"
            if isinstance(obj, tuple) and obj == DEFAULT_BITS:
                assert obj is DEFAULT_BITS, f"{mod.__name__}.{name} copies the bit set"
    # the modules that predict, quantize by plan or write profiles do so with system's objects
    uses = {"calibrate": ("q_noise", "DEFAULT_BITS"),
            "netcal": ("plans_drop_pp", "ModelProfile", "profile_from_dict"),
            "compounding": ("compound_pp",),
            "safety": ("plans_drop_pp", "Plan", "DEFAULT_BITS"),
            "chain": ("Plan",),
            "sensitivity_sources": ("q_noise",),
            "profiler": ("ModelProfile", "profile_from_dict"),
            "architectures": ("load_profile_file",),
            "__main__": ("profile_from_dict",)}
    for mod_name, names in uses.items():
        for name in names:
            assert vars(modules[mod_name]).get(name) is SYSTEM_MODEL[name], (mod_name, name)


def test_profiling_predicts_with_systems_law() -> None:
    """Plans drawn and predicted by profiling get exactly system.accuracy.drop_pp's figures."""
    prof = load_profile("digits_cnn")
    plans = safety.random_plans(prof.sens_w, prof.sens_a, 60, 10, seed=5)
    assert all(isinstance(p, Plan) for p in plans) and len(set(plans)) == 70
    want = plans_drop_pp(prof.sens_w, prof.sens_a, plans)       # the additive sum s
    got = drop_pp(prof, *plans_to_arrays(plans, prof.n_units))    # g(s), the planner's drop
    assert np.array_equal(system.accuracy.compound_pp(prof.compounding, want), got)
    assert ((want[:60] >= 0.1) & (want[:60] <= 5.0)).all()
    assert ((want[60:] > 5.0) & (want[60:] <= 10.0)).all()
    for p in plans:
        Plan.canonical(p.cut, p.weight_bits, p.act_bits, prof.n_units).validate(prof.n_units)
        assert Plan.canonical(p.cut, p.weight_bits, p.act_bits, prof.n_units) == p


def test_profiles_are_written_through_systems_validator(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    from profiling import __main__ as cli
    from profiling import profiler

    seen: list[str] = []

    def spy(data: object, where: str = "profile") -> system.profiles.ModelProfile:
        seen.append(where)
        return system.profiles.profile_from_dict(data, where)

    monkeypatch.setattr(profiler, "profile_from_dict", spy)
    monkeypatch.setattr(cli, "profile_from_dict", spy)
    mprof = profile_module(_Small(), (1, 4, 4))
    made = model_profile(mprof, "small", [1.0, 5.0, 2.0], [3.0, 1.0, 7.0], "proxy", 90.0, {})
    assert seen == ["profile small"]
    assert made.sens_w.tolist() == [1.0, 0.0, 2.0]  # the pool has no weights
    assert made.sens_a.tolist() == [3.0, 1.0, 0.0]  # nothing is sent after the last unit
    path = cli.write_profile(made, tmp_path)
    assert seen == ["profile small", "profile small"]
    assert path.read_text() == json.dumps(made.to_dict(), indent=2) + "\n"
    with pytest.raises(QsplitInputError, match=r"profile small\.units\[0\]\.sens_w: -1 is outside"):
        model_profile(mprof, "small", [-1.0, 0.0, 2.0], [3.0, 1.0, 0.0], "proxy", 90.0, {})
    bad = dataclasses.replace(made, sens_a=np.array([3.0, 1.0, 4.0]))
    with pytest.raises(QsplitInputError, match=r"units\[2\]\.sens_a: 4 on the last unit"):
        cli.write_profile(bad, tmp_path)


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda d: d["units"][1].update(name=d["units"][0]["name"]), r"units\[1\]\.name: .* unique"),
    (lambda d: d["units"][0].update(macs=10.5), r"units\[0\]\.macs: expected a whole number"),
    (lambda d: d["units"][3].update(out_elems=0), r"units\[3\]\.out_elems: 0 is outside"),
    (lambda d: d["units"][2].update(sens_w=1.0), r"units\[2\]\.sens_w: 1 on a unit without"),
    (lambda d: d["units"][-1].update(sens_a=0.5), r"units\[8\]\.sens_a: 0.5 on the last unit"),
    (lambda d: d["units"][4].update(sens_a=None), r"units\[4\]: sensitivities missing"),
])
def test_the_one_validator_holds_the_profilers_strict_rules(mutate, needle: str) -> None:
    d = _load("digits_cnn")
    mutate(d)
    with pytest.raises(QsplitInputError, match=needle):
        profile_from_dict(d, where="profile digits_cnn")


@pytest.mark.parametrize("name", ALL_PROFILES)
def test_shipped_profile_text_is_the_writers_output(name: str) -> None:
    """What the profiler writes (ModelProfile.save) is byte for byte the shipped file."""
    text = (PROFILES / f"{name}.json").read_text()
    assert json.dumps(load_profile(name).to_dict(), indent=2) + "\n" == text
