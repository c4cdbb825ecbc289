"""Quality metrics of a reconstruction: PSNR, SSIM and MS-SSIM (RGB, data range 255).

SSIM/MS-SSIM follow Wang et al. (11x11 Gaussian window, sigma 1.5, K1=0.01, K2=0.03; MS-SSIM's
five standard scale weights), computed per RGB channel and averaged. Images too small for five
scales use as many as fit, with the weights renormalised.

The encoder measures many candidates against one original, so ``Reference`` computes the
original's pyramid and local statistics once. The Gaussian window is applied as two 1-D passes
(it is the outer product of a 1-D Gaussian), and one compiled kernel per scale does both passes
over the candidate's three maps (y, y*y, x*y) and reduces the SSIM map to its means without
storing it: the same definition and, up to float64 rounding (about 1e-15), the same numbers as a
direct 11x11 convolution (tested), about 4x faster than the same passes as whole-array torch
operations (which read and wrote every map 22 times). The kernels release the GIL, so the
side-by-side searches measure in parallel.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

_MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WIN = 11
_C1, _C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical images)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _planes(img: np.ndarray) -> np.ndarray:
    """HxWx3 -> 3xHxW float64 (contiguous)."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(img, dtype=np.float64), 2, 0))


def _gauss(size: int) -> np.ndarray:
    """The normalised 1-D Gaussian whose outer product is the SSIM window."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * 1.5**2))
    return g / g.sum()


def _pool(x: np.ndarray) -> np.ndarray:
    """2x2 average pooling of 3xHxW (odd last row/column dropped), as avg_pool2d."""
    h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    return np.ascontiguousarray(
        (x[:, 0:h:2, 0:w:2] + x[:, 1:h:2, 0:w:2] + x[:, 0:h:2, 1:w:2] + x[:, 1:h:2, 1:w:2]) / 4
    )


@nb.njit(cache=True, nogil=True)
def _horizontal(
    a: np.ndarray,
    b: np.ndarray,
    c: int,
    g: np.ndarray,
    ha: np.ndarray,
    haa: np.ndarray,
    hab: np.ndarray,
) -> None:
    """Each row of plane ``c`` under the 1-D window g ('valid' columns): sums of g*a, g*a*a
    and g*a*b, written into ha, haa, hab (rows x valid columns)."""
    n = g.shape[0]
    ha[:] = 0.0
    haa[:] = 0.0
    hab[:] = 0.0
    for r in range(a.shape[1]):
        for k in range(n):
            gk = g[k]
            for j in range(ha.shape[1]):
                v = a[c, r, j + k]
                ha[r, j] += gk * v
                haa[r, j] += gk * (v * v)
                hab[r, j] += gk * (b[c, r, j + k] * v)


@nb.njit(cache=True, nogil=True)
def _reference_stats(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local mean and variance of each plane of x under the separable window ('valid')."""
    chans, rows, cols = x.shape
    n = g.shape[0]
    ro, co = rows - n + 1, cols - n + 1
    mx = np.zeros((chans, ro, co))
    sxx = np.zeros((chans, ro, co))
    hx = np.zeros((rows, co))
    hxx = np.zeros((rows, co))
    unused = np.zeros((rows, co))  # x*x again
    for c in range(chans):
        _horizontal(x, x, c, g, hx, hxx, unused)
        for i in range(ro):
            for k in range(n):
                gk = g[k]
                for j in range(co):
                    mx[c, i, j] += gk * hx[i + k, j]
                    sxx[c, i, j] += gk * hxx[i + k, j]
            for j in range(co):
                sxx[c, i, j] -= mx[c, i, j] * mx[c, i, j]
    return mx, sxx


@nb.njit(cache=True, nogil=True)
def _ssim_means(
    x: np.ndarray,
    mx: np.ndarray,
    sxx: np.ndarray,
    y: np.ndarray,
    g: np.ndarray,
    c1: float,
    c2: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per plane: the mean SSIM (luminance x contrast-structure) and the mean contrast-structure
    term of y against x, whose local statistics ``mx``, ``sxx`` are given."""
    chans, rows, cols = y.shape
    n = g.shape[0]
    ro, co = rows - n + 1, cols - n + 1
    hy = np.zeros((rows, co))
    hyy = np.zeros((rows, co))
    hxy = np.zeros((rows, co))
    my = np.zeros(co)
    eyy = np.zeros(co)
    exy = np.zeros(co)
    ssim = np.zeros(chans)
    cs_mean = np.zeros(chans)
    for c in range(chans):
        _horizontal(y, x, c, g, hy, hyy, hxy)
        total_s = 0.0
        total_cs = 0.0
        for i in range(ro):
            my[:] = 0.0
            eyy[:] = 0.0
            exy[:] = 0.0
            for k in range(n):
                gk = g[k]
                for j in range(co):
                    my[j] += gk * hy[i + k, j]
                    eyy[j] += gk * hyy[i + k, j]
                    exy[j] += gk * hxy[i + k, j]
            row_s = 0.0
            row_cs = 0.0
            for j in range(co):
                m_x = mx[c, i, j]
                m_y = my[j]
                syy = eyy[j] - m_y * m_y
                sxy = exy[j] - m_x * m_y
                cs = (2 * sxy + c2) / (sxx[c, i, j] + syy + c2)
                lum = (2 * m_x * m_y + c1) / (m_x * m_x + m_y * m_y + c1)
                row_s += lum * cs
                row_cs += cs
            total_s += row_s
            total_cs += row_cs
        ssim[c] = total_s / (ro * co)
        cs_mean[c] = total_cs / (ro * co)
    return ssim, cs_mean


def _scales(shape: tuple[int, ...]) -> int:
    scales = 1
    while scales < 5 and min(shape[:2]) // (2**scales) >= _WIN:
        scales += 1
    return scales


class Reference:
    """An original image prepared for scoring many reconstructions of it."""

    def __init__(self, original: np.ndarray) -> None:
        self.original = original
        self.n_scales = _scales(original.shape)
        weights = np.array(_MS_WEIGHTS[: self.n_scales], dtype=np.float64)
        self.weights = weights / weights.sum()
        self.levels: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        x = _planes(original)
        for i in range(self.n_scales):
            g = _gauss(min(_WIN, x.shape[1], x.shape[2]))
            mx, sxx = _reference_stats(x, g)
            self.levels.append((x, mx, sxx, g))
            if i < self.n_scales - 1:
                x = _pool(x)

    def _ssim_and_ms(self, decoded: np.ndarray, *, multiscale: bool) -> tuple[float, float]:
        y = _planes(decoded)
        values = []
        ssim0 = math.nan
        for i in range(self.n_scales if multiscale else 1):
            x, mx, sxx, g = self.levels[i]
            s, cs = _ssim_means(x, mx, sxx, y, g, _C1, _C2)
            if i == 0:
                ssim0 = float(s.mean())
            values.append(np.maximum(s if i == self.n_scales - 1 else cs, 0.0))
            if i < self.n_scales - 1:
                y = _pool(y)
        if not multiscale:
            return ssim0, math.nan
        stacked = np.stack(values)  # scales x 3
        return ssim0, float(np.prod(stacked ** self.weights[:, None], axis=0).mean())

    def ms_ssim(self, decoded: np.ndarray) -> float:
        """Multi-scale SSIM of ``decoded`` against the original (mean over RGB channels)."""
        return self._ssim_and_ms(decoded, multiscale=True)[1]

    def scores(self, decoded: np.ndarray) -> dict[str, float | None]:
        """PSNR (None when infinite: identical), SSIM and MS-SSIM in one pass."""
        ssim0, ms = self._ssim_and_ms(decoded, multiscale=True)
        p = psnr(self.original, decoded)
        return {
            "psnr": None if math.isinf(p) else round(p, 4),
            "ssim": round(ssim0, 6),
            "ms_ssim": round(ms, 6),
        }


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity (mean over RGB channels)."""
    return Reference(a)._ssim_and_ms(b, multiscale=False)[0]


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Multi-scale SSIM (mean over RGB channels)."""
    return Reference(a).ms_ssim(b)


def image_scores(original: np.ndarray, decoded: np.ndarray) -> dict[str, float | None]:
    """PSNR (None when infinite: identical), SSIM and MS-SSIM of a decoded image."""
    return Reference(original).scores(decoded)
