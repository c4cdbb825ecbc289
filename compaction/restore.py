"""The learned restoration layer: a small CNN that removes AVIF coding artefacts.

Decoding must give the same pixels on every machine (the certificate hashes them), so the
network runs in *exact* arithmetic: weights are multiples of 2^-10, activations are rounded to
multiples of 2^-8 after every layer, and the convolutions run in float64, where sums of such
dyadic products are exact and therefore independent of summation order, SIMD width or BLAS.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

WEIGHTS_PATH = Path(__file__).parent / "weights" / "restore_v1.pt"
WEIGHT_STEP = 2.0**-10
ACT_STEP = 2.0**-8
WIDTH = 16


class RestoreNet(nn.Module):
    """x (RGB/256, quality plane) -> RGB correction; zero-initialised last layer = identity."""

    def __init__(self, width: int = WIDTH) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(4, width, 3, padding=1),
                nn.Conv2d(width, width, 3, padding=1),
                nn.Conv2d(width, 3, 3, padding=1),
            ]
        )
        last = self.convs[-1]
        assert isinstance(last, nn.Conv2d)
        nn.init.zeros_(last.weight)
        assert last.bias is not None
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor, *, exact: bool = False) -> torch.Tensor:
        h = x
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if i < len(self.convs) - 1:
                h = torch.relu(h)
            if exact:
                h = torch.round(h / ACT_STEP) * ACT_STEP
        return x[:, :3] + h


def net_input(rgb: np.ndarray, quality: int) -> torch.Tensor:
    """HxWx3 uint8 + base quality -> 1x4xHxW float64 tensor of dyadic values."""
    x = torch.from_numpy(rgb.astype(np.float64) / 256.0).permute(2, 0, 1)
    q = torch.full_like(x[:1], float(quality) / 128.0)
    return torch.cat([x, q])[None]


def quantise_(model: RestoreNet) -> None:
    """Round every parameter to a multiple of 2^-10 (and keep it that way)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.round(p / WEIGHT_STEP) * WEIGHT_STEP)


_loaded: tuple[RestoreNet, str] | None = None


def load_restorer() -> tuple[RestoreNet, str] | None:
    """The shipped network (exact, float64) and its weights version; None when not shipped."""
    global _loaded
    if _loaded is None:
        if not WEIGHTS_PATH.exists():
            return None
        blob = WEIGHTS_PATH.read_bytes()
        state = torch.load(WEIGHTS_PATH, map_location="cpu", weights_only=True)
        model = RestoreNet().double()
        model.load_state_dict(state)
        quantise_(model)
        model.eval()
        _loaded = (model, "restore_v1-" + hashlib.sha256(blob).hexdigest()[:12])
    return _loaded


def restore(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Apply the shipped restoration network to a decoded base image (bit-exact everywhere)."""
    loaded = load_restorer()
    if loaded is None:
        return rgb
    model, _version = loaded
    with torch.no_grad():
        out = model(net_input(rgb, quality), exact=True)[0]
    pixels = torch.clamp(torch.round(out * 256.0), 0, 255).to(torch.uint8)
    return pixels.permute(1, 2, 0).contiguous().numpy()
