"""Weight and activation sensitivities for the ImageNet architecture profiles (not measured here).

Why: there is no ImageNet in this project, so the shipped architecture profiles cannot be
calibrated like ``digits_cnn``. ResNet-18 takes HAWQ-V3's published per-layer figures; the
other networks take a documented proxy law fitted on those same figures. Both are flagged in
the JSON (``"sensitivity_source": "hawq_v3"`` / ``"proxy"``) and never presented as measured.

Source of the figures: Zhen-Dong/HAWQ (Apache-2.0), ILP notebook, as copied in
../shared/data/FACTS.md: for the 19 quantized ResNet-18 layers (all convs but the stem),
the average Hessian trace per parameter and ||Q(w) - w||^2 at 8 and 4 bits. HAWQ's
sensitivity of layer i at b bits is trace_i * delta_w_sq_i(b).

ResNet-18 (``hawq_v3``):

* per-layer constant of the q(b) law: c_i = trace_i * delta_w_sq_8bit_i * (2^8 - 1)^2, so that
  c_i * q(8) is HAWQ's 8-bit figure (the 4-bit figures sit about 11% above c_i * q(4): median
  delta_w_sq_4 / delta_w_sq_8 is 322 against 289 from the law).
* the 19 layers are mapped to the block that holds them (checked by parameter count) and
  summed per block. The stem conv and the fc are not in HAWQ's list; they get the proxy law
  below evaluated at their depth and size (a documented extrapolation).
* scale to percentage points: HAWQ-V3 reports 71.47% fp32 and 68.45% at W4A4 (ImageNet):
  3.02 pp. In that setting the 19 layers run at 4 bits while the stem and fc stay at 8 bits,
  so the scale s solves s * (sum_19 c_i q(4) + (c_stem + c_fc) q(8)) = 3.02 pp. The whole
  drop is charged to the weights. Two biases pull in opposite directions and are not
  corrected: the figure is after quantization-aware fine-tuning (optimistic: post-training
  quantization, which a shipped head gets, loses more) and it includes 4-bit activations
  everywhere (pessimistic for the weights alone).

Proxy law (all networks' weights where no figure exists): fitted by least squares in log
space on the 19 HAWQ layers,

    ln c = a + b * rel_depth + g * ln(params),      R^2 about 0.75,

where rel_depth = (d - 1) / (D - 1), d the number of weighted layers on the longest path from
the input to the layer (itself included, so the stem is d = 1) and D its maximum (the last
layer). Early layers weigh more per parameter (b < 0), larger layers more in total (g > 0).
A unit's sens_w is the sum over its weighted layers. Other networks are scaled with the same
assumption as ResNet-18 (uniform W4 on all but the first and last weighted layers, those at
8 bits, costs 3.02 pp) — an assumption borrowed across architectures, not a measurement
(MobileNetV2, for one, is known to be more fragile).

Activation proxy (all ImageNet profiles): nothing per layer is published, so each interior cut
gets sens_a = rho * mean sens_w over units with weights, where rho is the ratio of the median
measured activation sensitivity to the median measured weight sensitivity of the digits CNN
(``digits_cnn`` profile provenance). It says "quantizing the tensor at a cut costs what the
digits CNN says a cut tensor costs relative to a typical unit's weights" — a proxy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from profiling.profiler import ModuleProfile
from system.bits import q_noise
from system.evidence import TensorEvidence

HAWQ_SOURCE = (
    "Zhen-Dong/HAWQ (Apache-2.0), ILP notebook, ResNet-18 per-layer Hessian trace and "
    "||Q(w)-w||^2; accuracies from the HAWQ-V3 paper (Yao et al., ICML 2021): fp32 71.47%, "
    "W4A4 68.45%; via ../shared/data/FACTS.md"
)
HESSIAN_TRACE_PER_PARAM = (
    0.06857826, 0.03162379, 0.03298575, 0.01205663, 0.02222431, 0.00596336, 0.06931772,
    0.00807129, 0.00372905, 0.00530698, 0.00209011, 0.00737569, 0.00210454, 0.00151197,
    0.00158041, 0.00078146, 0.00451841, 0.00098745, 0.00072944,
)  # fmt: skip
DELTA_W_SQ_8BIT = (
    0.0235, 0.0125, 0.0102, 0.0082, 0.0145, 0.0344, 0.0023, 0.0287, 0.0148, 0.0333, 0.0682,
    0.0027, 0.0448, 0.0336, 0.0576, 0.1130, 0.0102, 0.0947, 0.0532,
)  # fmt: skip
DELTA_W_SQ_4BIT = (
    6.7430, 3.9691, 3.3281, 2.6796, 4.7277, 10.5966, 0.6827, 9.0942, 4.8857, 10.7599,
    21.7546, 0.8603, 14.5324, 10.9651, 18.7706, 36.4044, 3.1572, 29.6994, 17.4016,
)  # fmt: skip
HAWQ_PARAMS = (
    36864, 36864, 36864, 36864, 73728, 147456, 8192, 147456, 147456, 294912, 589824, 32768,
    589824, 589824, 1179648, 2359296, 131072, 2359296, 2359296,
)  # fmt: skip
# The 19 layers in HAWQ's order, as torchvision names them (conv1, conv2, then downsample).
HAWQ_LAYERS = (
    "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer1.1.conv2",
    "layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample.0",
    "layer2.1.conv1", "layer2.1.conv2",
    "layer3.0.conv1", "layer3.0.conv2", "layer3.0.downsample.0",
    "layer3.1.conv1", "layer3.1.conv2",
    "layer4.0.conv1", "layer4.0.conv2", "layer4.0.downsample.0",
    "layer4.1.conv1", "layer4.1.conv2",
)  # fmt: skip
# Weighted-layer depth d of each HAWQ layer in torchvision's ResNet-18 (stem conv is d = 1,
# fc is d = 18; a downsample conv sits beside its block's conv1). profiler.WeightedLayer.depth
# gives the same figures; arch-profiles checks that.
HAWQ_DEPTH = (2, 3, 4, 5, 6, 7, 6, 8, 9, 10, 11, 10, 12, 13, 14, 15, 14, 16, 17)
RESNET18_MAX_DEPTH = 18
W4A4_DROP_PP = 71.47 - 68.45  # HAWQ-V3, ResNet-18, ImageNet top-1 after fine-tuning
LAW_BITS = 8


def hawq_layer_constants() -> np.ndarray:
    """c_i = trace_i * ||Q(w)-w||^2 at 8 bits * (2^8 - 1)^2 (unitless, per HAWQ layer)."""
    t = np.asarray(HESSIAN_TRACE_PER_PARAM)
    d8 = np.asarray(DELTA_W_SQ_8BIT)
    return t * d8 / float(q_noise(LAW_BITS))


def rel_depth(depth: int | np.ndarray, max_depth: int) -> np.ndarray:
    return (np.asarray(depth, dtype=float) - 1.0) / max(max_depth - 1, 1)


def fit_proxy_law() -> dict[str, float]:
    """Least squares of ln c = a + b rel_depth + g ln(params) on the 19 HAWQ layers."""
    c = hawq_layer_constants()
    x = np.column_stack(
        [
            np.ones(len(c)),
            rel_depth(np.asarray(HAWQ_DEPTH), RESNET18_MAX_DEPTH),
            np.log(np.asarray(HAWQ_PARAMS, dtype=float)),
        ]
    )
    y = np.log(c)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    r2 = 1.0 - float(resid @ resid) / float(((y - y.mean()) ** 2).sum())
    return {"a": float(coef[0]), "b": float(coef[1]), "g": float(coef[2]), "r2": r2}


def proxy_constant(law: dict[str, float], depth: int, max_depth: int, params: int) -> float:
    """The proxy law's per-layer constant (unitless, same scale as hawq_layer_constants)."""
    return float(
        np.exp(law["a"] + law["b"] * rel_depth(depth, max_depth) + law["g"] * np.log(max(params, 1)))
    )


def _layer_constants(
    prof: ModuleProfile, law: dict[str, float], hawq: bool
) -> tuple[list[list[tuple[str, float, str]]], int]:
    """Per unit, (layer name, constant, source) for each weighted layer."""
    max_depth = max(layer.depth for u in prof.units for layer in u.layers)
    hawq_c = dict(zip(HAWQ_LAYERS, hawq_layer_constants(), strict=True)) if hawq else {}
    if hawq:
        by_name = {layer.name: layer for u in prof.units for layer in u.layers}
        for name, n_params, depth in zip(HAWQ_LAYERS, HAWQ_PARAMS, HAWQ_DEPTH, strict=True):
            layer = by_name.get(name)
            if layer is None or layer.params != n_params or layer.depth != depth:
                raise ValueError(f"HAWQ layer {name} does not match the profiled ResNet-18")
        if max_depth != RESNET18_MAX_DEPTH:
            raise ValueError("profiled ResNet-18 depth does not match HAWQ_DEPTH")
    out: list[list[tuple[str, float, str]]] = []
    for u in prof.units:
        rows = []
        for layer in u.layers:
            if layer.name in hawq_c:
                rows.append((layer.name, float(hawq_c[layer.name]), "hawq_v3"))
            else:
                c = proxy_constant(law, layer.depth, max_depth, layer.params)
                rows.append((layer.name, c, "proxy_law"))
        out.append(rows)
    return out, max_depth


def weight_sensitivities(
    prof: ModuleProfile, hawq: bool
) -> tuple[list[float], dict[str, Any], list[TensorEvidence]]:
    """sens_w per unit in pp (HAWQ-V3 for ResNet-18's 19 layers, proxy law elsewhere)."""
    law = fit_proxy_law()
    rows, max_depth = _layer_constants(prof, law, hawq)
    # scale: all weighted layers at 4 bits except the first and last (8 bits) -> 3.02 pp
    first_last = {1, max_depth}
    depth_of = {layer.name: layer.depth for u in prof.units for layer in u.layers}
    unscaled_drop = 0.0
    for unit_rows in rows:
        for name, c, _ in unit_rows:
            b = 8 if depth_of[name] in first_last else 4
            unscaled_drop += c * float(q_noise(b))
    scale = W4A4_DROP_PP / unscaled_drop
    sens_w = [scale * sum(c for _, c, _ in unit_rows) for unit_rows in rows]
    prov = {
        "weights": (
            "HAWQ-V3 per-layer trace * ||Q(w)-w||^2(8 bit) * 255^2 for the 19 quantized "
            "ResNet-18 layers, summed per block; stem conv and fc from the proxy law"
            if hawq
            else "proxy law (fitted on HAWQ-V3 ResNet-18 layers) per weighted layer, summed "
            "per unit"
        ),
        "proxy_law": {
            "form": "ln c = a + b*rel_depth + g*ln(params), rel_depth=(d-1)/(D-1), d = weighted "
            "layers on the longest path from the input (stem d=1)",
            **{k: round(v, 6) for k, v in law.items()},
            "fitted_on": "19 HAWQ-V3 ResNet-18 layers (c = trace * dw2_8bit * 255^2)",
        },
        "scale_pp": scale,
        "scale_fit": (
            f"uniform W4 on all weighted layers but the first and last (8 bit) predicts "
            f"{W4A4_DROP_PP:.2f} pp, HAWQ-V3 ResNet-18 W4A4 71.47 -> 68.45 (after fine-tuning: "
            "optimistic; includes activation quantization: the whole drop is charged to weights)"
            + ("" if hawq else "; borrowed from ResNet-18 as an assumption, not a measurement")
        ),
        "source": HAWQ_SOURCE,
        "proxy_layers": [name for unit_rows in rows for name, _, src in unit_rows if src != "hawq_v3"]
        if hawq
        else "all",
        "evidence": "per unit: the widths of HAWQ-V3's W4A4 and W8A8 runs (after fine-tuning, "
        "whole network, not per tensor)" if hawq else "none: proxy figures back no width below 32",
    }
    return sens_w, prov, unit_evidence([[src for _, _, src in r] for r in rows], hawq)


#: Widths of HAWQ-V3's ResNet-18 runs: W4A4 (the 19 layers and every activation at 4 bits, stem
#: and fc at 8) and W8A8, both after quantization-aware fine-tuning (FACTS.md).
HAWQ_WIDTHS = {"hawq_v3": (4, 8), "proxy_law": (8,)}


def unit_evidence(unit_sources: Sequence[Sequence[str]], hawq: bool) -> list[TensorEvidence]:
    """What each unit's sensitivities rest on (system.evidence): for ResNet-18 the widths of
    HAWQ-V3's whole-network runs (a unit holding a proxy-law layer, the stem or the fc, only
    8 bits: those ran at 8 in W4A4); for the proxy profiles nothing, so the planner offers
    their tensors at 32 bits unless extrapolation is asked for. ``unit_sources`` lists the
    source of each weighted layer of each unit ("hawq_v3" / "proxy_law")."""
    out = []
    for i, srcs in enumerate(unit_sources):
        last = i == len(unit_sources) - 1
        if not hawq:
            out.append(TensorEvidence())
            continue
        w = sorted(set.intersection(*(set(HAWQ_WIDTHS[s]) for s in srcs))) if srcs else []
        a = [] if last else [4, 8]
        out.append(TensorEvidence(tuple(w), "qat" if w else "none", tuple(a), "qat" if a else "none"))
    return out


def activation_sensitivities(
    sens_w: Sequence[float], rho: float
) -> tuple[list[float], dict[str, Any]]:
    """Proxy sens_a: rho * mean sens_w over units with weights, for every interior cut."""
    weighted = [s for s in sens_w if s > 0]
    level = rho * float(np.mean(weighted))
    sens_a = [level] * len(sens_w)
    sens_a[-1] = 0.0
    prov = {
        "activations": "proxy: sens_a = rho * mean(sens_w of units with weights) at every cut",
        "rho": rho,
        "rho_source": "digits_cnn measured median(sens_a) / median(sens_w > 0)",
    }
    return sens_a, prov
