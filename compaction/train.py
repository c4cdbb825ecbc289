"""Train CompactEdge's learned layers from the project's training photos.

    python -m compaction.train restore  [--minutes 40] [--data DIR]   # restoration CNN

(The lossless coder learns its model while coding and needs no training; the first lossless
coder's tables, ``weights/lossless_v1.npz``, are frozen so that its stored bitstreams decode.)

Seeded, resumable (a checkpoint every few hundred steps; rerunning continues from it), with a
progress bar. Never point --data at the Kodak evaluation set.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from compaction.base import avif_decode, avif_encode
from compaction.restore import WEIGHTS_PATH, RestoreNet, net_input, quantise_

_REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (
    next(
        (p for p in (_REPO.parent / "shared", _REPO.parents[1] / "shared") if p.exists()),
        _REPO.parent / "shared",
    )
    / "data"
    / "photos"
)
CACHE = Path("data") / "train-cache"
TRAIN_QUALITIES = (25, 40, 55, 70, 85)
PATCH = 64
BATCH = 16


def _photos(data: Path) -> list[Path]:
    files = sorted(p for p in data.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    if "kodak" in str(data).lower():
        raise SystemExit("refusing to train on the Kodak evaluation set")
    return files


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def _base_pairs(data: Path) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(original, decoded AVIF base, quality) for every training photo and quality, cached."""
    CACHE.mkdir(parents=True, exist_ok=True)
    pairs = []
    files = _photos(data)
    with _progress() as bar:
        task = bar.add_task("base layer", total=len(files) * len(TRAIN_QUALITIES))
        for path in files:
            rgb = _load(path)
            for q in TRAIN_QUALITIES:
                cached = CACHE / f"{path.stem}-q{q}.npy"
                if not cached.exists():
                    np.save(cached, avif_decode(avif_encode(rgb, q)))
                pairs.append((rgb, np.load(cached), q))
                bar.advance(task)
    return pairs


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
    )


def _batch(pairs: list[tuple[np.ndarray, np.ndarray, int]], rng: np.random.Generator):
    xs, ys = [], []
    for _ in range(BATCH):
        orig, base, q = pairs[rng.integers(len(pairs))]
        y0 = rng.integers(orig.shape[0] - PATCH)
        x0 = rng.integers(orig.shape[1] - PATCH)
        crop = (slice(y0, y0 + PATCH), slice(x0, x0 + PATCH))
        xs.append(net_input(base[crop], q).float())
        ys.append(torch.from_numpy(orig[crop].astype(np.float32) / 256.0).permute(2, 0, 1)[None])
    return torch.cat(xs), torch.cat(ys)


def train_restore(data: Path, minutes: float, steps: int, seed: int) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    pairs = _base_pairs(data)
    ckpt_path = CACHE / "restore.ckpt"
    model = RestoreNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = 0
    rng = np.random.default_rng(seed)
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        step = ckpt["step"]
        rng = np.random.default_rng(seed + step)
    deadline = time.monotonic() + minutes * 60
    with _progress() as bar:
        task = bar.add_task("restore", total=steps, completed=step)
        while step < steps and time.monotonic() < deadline:
            for group in opt.param_groups:
                group["lr"] = 1e-3 if step < steps * 0.7 else 2e-4
            x, y = _batch(pairs, rng)
            loss = torch.mean((model(x) - y) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            bar.update(task, completed=step, description=f"restore mse={loss.item() * 65536:.1f}")
            if step % 200 == 0:
                torch.save(
                    {"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, ckpt_path
                )
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, ckpt_path)
    quantise_(model)
    WEIGHTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.double().state_dict(), WEIGHTS_PATH)
    print(f"saved {WEIGHTS_PATH} after {step} steps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=["restore"])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--minutes", type=float, default=40.0)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    train_restore(args.data, args.minutes, args.steps, args.seed)


if __name__ == "__main__":
    main()
