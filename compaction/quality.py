"""The documented mapping from ``quality_target`` (0-100) to a measured quality requirement.

    quality_target 100      -> lossless: decoded pixels identical to the original's
    quality_target q < 100  -> MS-SSIM >= 1 - 0.2 * (1 - q/100) ** 1.5

so 85 (the default) requires MS-SSIM >= 0.9884, 50 requires >= 0.9293 and 0 requires >= 0.8.
Every rendition and the compact form are chosen as the smallest that meets the requirement.
"""

from __future__ import annotations

LOSSLESS = 100


def target_ms_ssim(quality_target: float) -> float:
    """The MS-SSIM a reconstruction must reach for a lossy quality target."""
    q = min(max(float(quality_target), 0.0), 100.0)
    return 1.0 - 0.2 * (1.0 - q / 100.0) ** 1.5


def meets(quality_target: float, ms_ssim: float, *, exact: bool) -> bool:
    """Whether a reconstruction satisfies the quality target, at the certificate's precision
    (scores and the requirement are both printed to 6 decimals; rounding keeps the order, so
    a measured value that meets the target never reads as missing it)."""
    if quality_target >= LOSSLESS:
        return exact
    return exact or round(ms_ssim, 6) >= round(target_ms_ssim(quality_target), 6)
