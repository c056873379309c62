"""Networks trained on scikit-learn's bundled digits data: the project's real, measured models.

Why: sensitivities must be *measured* on a trained network with real data somewhere in the
project, and ImageNet is out of reach here. ``sklearn.datasets.load_digits`` ships 1,797 real
8x8 handwritten digits (no download). The CNN is deep enough to be a partitioning target:
9 units (4 conv blocks, 2 max-pools, 3 fully connected layers) whose output sizes vary from
2,048 to 10 elements.

Data split (fixed seed, stratified by class): half of the images train the network; the other
half is held out and split again into a *calibration* half (sensitivities and the safety
factor are fitted on it) and a *validation* half (the accuracy model is checked on it). The
three sets are disjoint.

Two networks (:data:`NETS`): ``digits_cnn`` (below) and ``digits_resnet``
(``profiling.digits_resnet``: three residual blocks with batch normalisation).

Training: Adam, cross-entropy, fixed seed, one CPU thread, a minute or two. Weights are saved
as a plain ``.npz`` of the state dict (no pickle) in ``profiling/data/<net>.npz``, with the
test accuracy in ``profiling/data/<net>.json``.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from profiling.digits_resnet import build_digits_resnet
from system.atomic import atomic_write_bytes, atomic_write_text, npz_bytes

DATA_DIR = Path(__file__).resolve().parent / "data"
WEIGHTS_PATH = DATA_DIR / "digits_cnn.npz"
TRAIN_RECORD_PATH = DATA_DIR / "digits_cnn.json"
INPUT_SHAPE = (1, 8, 8)
SPLIT_SEED = 0
HELD_OUT_FRAC = 0.5  # 50% train, 25% calibration, 25% validation
TRAIN_SEED = 0


def build_digits_cnn() -> nn.Sequential:
    """The digits CNN as a chain of named units (each child is one profile unit)."""
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU())),  # 16x8x8
                ("conv2", nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())),  # 32x8x8
                ("pool1", nn.MaxPool2d(2)),  # 32x4x4
                ("conv3", nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU())),  # 64x4x4
                ("conv4", nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())),  # 64x4x4
                ("pool2", nn.Sequential(nn.MaxPool2d(2), nn.Flatten())),  # 256
                ("fc1", nn.Sequential(nn.Linear(256, 128), nn.ReLU())),
                ("fc2", nn.Sequential(nn.Linear(128, 64), nn.ReLU())),
                ("fc3", nn.Linear(64, 10)),
            ]
        )
    )


#: network name -> builder of its (untrained) module; each has weights and a record in DATA_DIR
NETS: dict[str, Callable[[], nn.Module]] = {
    "digits_cnn": build_digits_cnn,
    "digits_resnet": build_digits_resnet,
}


def check_net(net: str, field: str = "--net") -> str:
    """``net`` if it names one of :data:`NETS`, else a one-line error naming the field."""
    if net not in NETS:
        raise ValueError(f"{field}: {net!r} is not one of {sorted(NETS)}")
    return net


def weights_path(net: str) -> Path:
    return DATA_DIR / f"{check_net(net)}.npz"


def record_path(net: str) -> Path:
    return DATA_DIR / f"{check_net(net)}.json"


@dataclass
class DigitsSplit:
    """Disjoint train / calibration / validation sets (images scaled to [0, 1], N x 1 x 8 x 8)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_calib: torch.Tensor
    y_calib: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor

    @property
    def x_test(self) -> torch.Tensor:
        """The whole held-out set (calibration + validation halves)."""
        return torch.cat([self.x_calib, self.x_val])

    @property
    def y_test(self) -> torch.Tensor:
        return torch.cat([self.y_calib, self.y_val])

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "calib": len(self.y_calib), "val": len(self.y_val)}


def load_split(seed: int = SPLIT_SEED, held_out: float = HELD_OUT_FRAC) -> DigitsSplit:
    """Split the bundled digits: train, then the held-out part in two halves, stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None, :, :]
    y = data.target.astype(np.int64)
    x_tr, x_ho, y_tr, y_ho = train_test_split(
        x, y, test_size=held_out, random_state=seed, stratify=y
    )
    x_ca, x_va, y_ca, y_va = train_test_split(
        x_ho, y_ho, test_size=0.5, random_state=seed + 1, stratify=y_ho
    )

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    return DigitsSplit(t(x_tr), t(y_tr), t(x_ca), t(y_ca), t(x_va), t(y_va))


EVAL_SHIFTS_PX = (-1, 0, 1)


def eval_views(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out images at three horizontal positions (shift -1, 0, +1 px, zero fill).

    Why: with ~540 images and ~97% accuracy, a top-1 drop is decided by a handful of images
    near the decision boundary, and two disjoint halves disagree by tens of percent on the
    same plan. Shifted copies are new top-1 decisions (the network was trained with such
    shifts) and make the calibration and validation halves agree. Vertical shifts are not
    used: the digits touch the top and bottom rows, and a shift there cuts strokes off.
    """
    pad = torch.nn.functional.pad(x, (1, 1, 0, 0))
    views = [pad[..., 1 + dx : 1 + dx + x.shape[-1]] for dx in EVAL_SHIFTS_PX]
    return torch.cat(views), y.repeat(len(EVAL_SHIFTS_PX))


def accuracy_pct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in percent (eval mode, no grad)."""
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(dim=1)
    return float((pred == y).double().mean().item() * 100.0)


def train(
    seed: int = TRAIN_SEED, epochs: int = 100, batch: int = 32, lr_start: float = 2e-3,
    net: str = "digits_cnn",
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the CNN on the training split; returns the model and a record of the run.

    Runs on one CPU thread: bitwise reproducible for a given torch build, and on a shared
    2-core machine one thread is faster than two (no OpenMP spin contention).
    """
    torch.set_num_threads(1)
    split = load_split()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = NETS[check_net(net)]()
    opt = torch.optim.Adam(model.parameters(), lr=lr_start, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    n = len(split.y_train)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            xb = split.x_train[idx]
            # one-pixel random shifts: cheap augmentation on a small training set
            dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            opt.zero_grad()
            loss_fn(model(xb), split.y_train[idx]).backward()
            opt.step()
        sched.step()
    train_s = time.perf_counter() - t0
    model.eval()
    record = {
        "net": net,
        "seed": seed,
        "split_seed": SPLIT_SEED,
        "epochs": epochs,
        "batch": batch,
        "optimizer": f"Adam lr {lr_start} cosine to 0, weight decay 1e-4, +-1 pixel shifts",
        "split_sizes": split.sizes(),
        "train_accuracy_pct": accuracy_pct(model, split.x_train, split.y_train),
        "test_accuracy_pct": accuracy_pct(model, split.x_test, split.y_test),
        "calib_accuracy_pct": accuracy_pct(model, split.x_calib, split.y_calib),
        "val_accuracy_pct": accuracy_pct(model, split.x_val, split.y_val),
        "train_s": round(train_s, 1),
        "params": sum(p.numel() for p in model.parameters()),
    }
    return model, record


def save_weights(model: nn.Module, path: Path = WEIGHTS_PATH) -> None:
    """Save the state dict as a plain ``.npz`` (loadable with ``allow_pickle=False``)."""
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, npz_bytes(arrays))


def load_digits_cnn(path: Path = WEIGHTS_PATH) -> nn.Module:
    """The trained CNN from the committed ``.npz`` (no pickle: ``allow_pickle=False``)."""
    return load_net("digits_cnn", path)


def load_net(net: str, path: Path | None = None) -> nn.Module:
    """A trained network of :data:`NETS` from its committed ``.npz`` (``allow_pickle=False``)."""
    model = NETS[check_net(net)]()
    path = weights_path(net) if path is None else path
    with np.load(path, allow_pickle=False) as z:
        state = {k: torch.from_numpy(z[k].copy()) for k in z.files}
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def load_train_record(path: Path = TRAIN_RECORD_PATH, net: str | None = None) -> dict[str, Any]:
    return json.loads((record_path(net) if net else path).read_text())


def train_and_save(seed: int = TRAIN_SEED, net: str = "digits_cnn") -> dict[str, Any]:
    """Train, save the weights and the record; ``python -m profiling train-digits [--net N]``."""
    model, record = train(seed, net=net)
    save_weights(model, weights_path(net))
    # the recorded figure is what the *saved* weights give, as a later load will see them
    split = load_split()
    record["test_accuracy_pct"] = accuracy_pct(load_net(net), split.x_test, split.y_test)
    atomic_write_text(record_path(net), json.dumps(record, indent=2) + "\n")
    return record
