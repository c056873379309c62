"""Profiles of the shipped ImageNet architectures (AlexNet, VGG-16, ResNet-18, ResNet-50,
MobileNetV2 at 3x224x224), generated from torchvision's model definitions.

Why: the planner's cost figures must come from the real networks. torchvision is needed only
to regenerate these files (``python -m profiling arch-profiles``); the committed JSON is what
the project reads. The published figures next to which they are checked are torchvision's
own documented ones (``Weights.meta``: ``_ops`` in GMACs, ``num_params``, ``acc@1``),
recorded in each profile's provenance; ``base_accuracy_pct`` is torchvision's documented
ImageNet top-1 of the IMAGENET1K_V1 weights (no weights are downloaded: the figures are
metadata).

Sensitivities: see ``profiling.sensitivity_sources`` (HAWQ-V3 for ResNet-18, a proxy law for
the others; activations by proxy everywhere).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from profiling import sensitivity_sources as ss
from profiling.profiler import model_profile, profile_module
from system.profiles import ModelProfile, load_profile_file

ARCHS: dict[str, tuple[str, str]] = {
    # profile name: (torchvision.models builder, weights enum)
    "alexnet": ("alexnet", "AlexNet_Weights"),
    "vgg16": ("vgg16", "VGG16_Weights"),
    "resnet18": ("resnet18", "ResNet18_Weights"),
    "resnet50": ("resnet50", "ResNet50_Weights"),
    "mobilenet_v2": ("mobilenet_v2", "MobileNet_V2_Weights"),
}
INPUT_SHAPE = (3, 224, 224)


def _torchvision() -> Any:
    try:
        import torchvision
    except Exception as exc:  # ImportError, or an ABI mismatch with the installed torch
        raise ValueError(
            "regenerating the architecture profiles needs torchvision matching torch "
            f"({type(exc).__name__}: {exc}); see `python -m profiling --help` for a separate venv"
        ) from exc
    return torchvision


def digits_activation_ratio(profiles_dir: Path) -> float:
    """rho = median measured sens_a / median measured sens_w (> 0) of the digits CNN.

    Rounded to 4 significant digits: a proxy needs no more, and the ratio is then the same
    whatever safety factor scales both sensitivities (the unrounded ratio differs in its last
    bits), so recalibrating the digits CNN does not change the ImageNet profiles.
    """
    path = profiles_dir / "digits_cnn.json"
    if not path.exists():
        raise ValueError(f"{path} is missing: run `python -m profiling calibrate-digits` first")
    digits = load_profile_file(path)
    sa = digits.sens_a[:-1]
    sw = digits.sens_w[digits.sens_w > 0]
    return float(f"{float(np.median(sa) / np.median(sw)):.4g}")


def arch_profile(name: str, profiles_dir: Path) -> ModelProfile:
    """Build the profile of one architecture (needs torchvision)."""
    if name not in ARCHS:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(ARCHS)}")
    tv = _torchvision()
    builder, weights_enum = ARCHS[name]
    model = getattr(tv.models, builder)(weights=None)
    meta = getattr(tv.models, weights_enum).IMAGENET1K_V1.meta
    prof = profile_module(model, INPUT_SHAPE)
    hawq = name == "resnet18"
    sens_w, prov_w, evidence = ss.weight_sensitivities(prof, hawq=hawq)
    rho = digits_activation_ratio(profiles_dir)
    sens_a, prov_a = ss.activation_sensitivities(sens_w, rho)
    import torch

    provenance = {
        "script": "python -m profiling arch-profiles (profiling/architectures.py)",
        "definition": f"torchvision {tv.__version__} models.{builder}(weights=None), "
        f"torch {torch.__version__}",
        "input": "1x3x224x224, MACs by torch.utils.flop_counter.FlopCounterMode / 2 (conv, "
        "linear); params: nn.Parameters, counted once",
        "published": {
            "source": f"torchvision {weights_enum}.IMAGENET1K_V1.meta",
            "gmacs": meta["_ops"],
            "params": meta["num_params"],
            "acc1_pct": meta["_metrics"]["ImageNet-1K"]["acc@1"],
        },
        "profiled": {"gmacs": round(prof.macs / 1e9, 6), "params": prof.params},
        "base_accuracy": "torchvision documented ImageNet-1K acc@1 of IMAGENET1K_V1 weights",
        "sensitivity": {**prov_w, **prov_a},
        "note": "sensitivities are not measured here (no ImageNet): "
        + ("HAWQ-V3 published figures, scaled" if hawq else "a proxy law, scaled"),
    }
    return replace(model_profile(
        prof,
        name,
        sens_w,
        sens_a,
        "hawq_v3" if hawq else "proxy",
        float(meta["_metrics"]["ImageNet-1K"]["acc@1"]),
        provenance,
    ), evidence=tuple(evidence))


def resnet18_module(seed: int = 0) -> Any:
    """ResNet-18 as torchvision defines it (same modules, names and shapes), randomly
    initialised with ``seed``: per-unit times need the network, not its trained weights,
    and torchvision matching the project's torch is not installable here."""
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            return self.relu(out + identity)

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            widths = [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)]
            for i, (cin, cout, stride) in enumerate(widths, start=1):
                setattr(self, f"layer{i}", nn.Sequential(BasicBlock(cin, cout, stride),
                                                         BasicBlock(cout, cout, 1)))
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512, 1000)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    torch.manual_seed(seed)
    model = ResNet18()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model.eval()
