"""Quality metrics of a reconstruction: PSNR, SSIM and MS-SSIM (RGB, data range 255).

SSIM/MS-SSIM follow Wang et al. (11x11 Gaussian window, sigma 1.5, K1=0.01, K2=0.03; MS-SSIM's
five standard scale weights), computed per RGB channel and averaged. Images too small for five
scales use as many as fit, with the weights renormalised.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

_MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WIN = 11


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical images)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float64)).permute(2, 0, 1)[None]


def _window(size: int) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * 1.5**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(3, 1, size, size).contiguous()


def _ssim_parts(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    size = min(_WIN, x.shape[-1], x.shape[-2])
    win = _window(size)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = F.conv2d(x, win, groups=3), F.conv2d(y, win, groups=3)
    sxx = F.conv2d(x * x, win, groups=3) - mx**2
    syy = F.conv2d(y * y, win, groups=3) - my**2
    sxy = F.conv2d(x * y, win, groups=3) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
    return (lum * cs).mean(dim=(2, 3)), cs.mean(dim=(2, 3))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity (mean over RGB channels)."""
    with torch.no_grad():
        s, _ = _ssim_parts(_tensor(a), _tensor(b))
    return float(s.mean())


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Multi-scale SSIM (mean over RGB channels)."""
    scales = 1
    while scales < 5 and min(a.shape[:2]) // (2**scales) >= _WIN:
        scales += 1
    weights = torch.tensor(_MS_WEIGHTS[:scales], dtype=torch.float64)
    weights = weights / weights.sum()
    x, y = _tensor(a), _tensor(b)
    values = []
    with torch.no_grad():
        for i in range(scales):
            s, cs = _ssim_parts(x, y)
            values.append(torch.relu(s if i == scales - 1 else cs))
            if i < scales - 1:
                x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        stacked = torch.stack(values, dim=0)  # scales x 1 x 3
        result = torch.prod(stacked ** weights[:, None, None], dim=0)
    return float(result.mean())


def image_scores(original: np.ndarray, decoded: np.ndarray) -> dict[str, float | None]:
    """PSNR (None when infinite: identical), SSIM and MS-SSIM of a decoded image."""
    p = psnr(original, decoded)
    return {
        "psnr": None if math.isinf(p) else round(p, 4),
        "ssim": round(ssim(original, decoded), 6),
        "ms_ssim": round(ms_ssim(original, decoded), 6),
    }
