"""Train CompactEdge's learned layers from the project's training photos.

    python -m compaction.train restore  [--minutes 40] [--data DIR]   # restoration CNN

(The lossless coder learns its model while coding and needs no training; the first lossless
coder's tables, ``weights/lossless_v1.npz``, are frozen so that its stored bitstreams decode.)

Seeded, resumable (a checkpoint every few hundred steps; rerunning continues from it), with a
progress bar. Never point --data at the Kodak evaluation set.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from compaction.base import avif_decode, avif_encode
from compaction.restore import V2, build, net_input, quantise_

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


def _lr(step: int, steps: int) -> float:
    """Cosine decay from 1e-3 to 1e-5 over the planned steps (no restart on resume)."""
    return 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * min(step / steps, 1.0)))


def _save(model: torch.nn.Module, opt: torch.optim.Optimizer, step: int, path: Path) -> None:
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, path)


def train_restore(data: Path, minutes: float, steps: int, seed: int) -> None:
    """Train the restoration network being developed (``restore.V2``) and export its weights.

    Shipped weights are never overwritten in place: old bitstreams name the weights they were
    made with (``restore.SPECS``), so a new training run exports a new file."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    pairs = _base_pairs(data)
    ckpt_path = CACHE / f"{V2.path.stem}.ckpt"
    model = build(V2)
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
                group["lr"] = _lr(step, steps)
            x, y = _batch(pairs, rng)
            loss = torch.mean((model(x) - y) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            bar.update(task, completed=step, description=f"restore mse={loss.item() * 65536:.1f}")
            if step % 200 == 0:
                _save(model, opt, step, ckpt_path)
    _save(model, opt, step, ckpt_path)
    quantise_(model, V2.weight_step)
    if V2.sha256:  # shipped and pinned: old streams decode with exactly that file
        print(f"{V2.file} is shipped (pinned in restore.SPECS); not overwritten. Train a new id.")
    else:
        V2.path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.double().state_dict(), V2.path)
        print(f"saved {V2.path} after {step} steps")
    _report_gain(model.double(), pairs, np.random.default_rng(seed))


def _report_gain(model: torch.nn.Module, pairs: list, rng: np.random.Generator) -> None:
    """What the exported (quantised, exact) network adds on 48 random 256x256 training crops:
    PSNR and MS-SSIM dB over the AVIF base (the encoder's ``RESTORE_REACH_DB`` comes from the
    MS-SSIM figure). Training data, so an optimistic figure: Kodak's is in evals.codec."""
    from compaction import metrics
    from compaction.search import db

    psnr, msdb = [], []
    for _ in range(48):
        orig, base, q = pairs[rng.integers(len(pairs))]
        y0, x0 = rng.integers(orig.shape[0] - 256), rng.integers(orig.shape[1] - 256)
        o, b = orig[y0 : y0 + 256, x0 : x0 + 256], base[y0 : y0 + 256, x0 : x0 + 256]
        with torch.no_grad():
            out = model(net_input(b, q), act_step=V2.act_step)[0]
        r = torch.clamp(torch.round(out * 256.0), 0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        psnr.append(metrics.psnr(o, r) - metrics.psnr(o, b))
        msdb.append(db(metrics.ms_ssim(o, r)) - db(metrics.ms_ssim(o, b)))
    for name, v in (("PSNR dB", psnr), ("MS-SSIM dB", msdb)):
        p = np.percentile(v, [10, 50, 90])
        print(f"gain on training crops, {name}: mean {np.mean(v):+.3f}, p10/p50/p90 {p.round(3)}")


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
