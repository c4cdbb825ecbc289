"""The learned restoration layer: a small CNN that removes AVIF coding artefacts.

Decoding must give the same pixels on every machine (the certificate hashes them), so the
network runs in *exact* arithmetic: weights are multiples of a power of two, activations are
rounded to multiples of a power of two after every layer, and every sum of products is computed
exactly, so it is independent of summation order, SIMD width or BLAS. In float64 (the reference
form, ``RestoreNet.forward``) such sums are exact outright. The decoder (``_exact_convs``) gets
the same values about 4x faster from float32 convolutions: in units of the two steps, weights and
activations are integers (activations non-negative: pixels, the quality plane and ReLU outputs),
so each layer's input is split into base-2^k digits small enough that every partial sum of
digit x weight products stays below 2^24, where float32 counts integers exactly; the digit
convolutions are recombined in float64. Whether this process's float32 convolution really is
exact on such values is checked once against the float64 form (``_float32_convs_exact``); where it
is not (an algorithm that transforms its inputs, reduced-precision modes), the float64 form runs.

A stored bitstream must decode to the same pixels forever, so every set of weights ever shipped
stays registered here under the id the bitstream carries (``SPECS``), with its architecture,
its quantisation steps and the SHA-256 of its file: a weights file that changed under an id is
refused rather than silently decoding old streams differently. New weights get a new id and a
new file; ``DEFAULT_ID`` is what the encoder writes.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class Spec:
    """One shipped restoration network: what a weights id in a bitstream means, forever."""

    id: int
    file: str
    sha256: str  # of the weights file; pins the pixels old bitstreams decode to
    width: int  # hidden channels
    layers: int  # 3x3 convolutions
    unshuffle: int  # 1: full resolution; 2: on 2x2 pixel blocks (4x fewer positions, wider)
    weight_step: float
    act_step: float

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file


V1 = Spec(  # every version 1 stream; 1000 training steps
    1,
    "restore_v1.pt",
    "5870c5e54e141ba2875be5edb8fb8c08f9e7bb05d01f97682c82ee266bc5f10a",
    width=16,
    layers=3,
    unshuffle=1,
    weight_step=2.0**-10,
    act_step=2.0**-8,
)
V2 = Spec(  # what ``compaction.train restore`` trains; 15000 steps
    2,
    "restore_v2.pt",
    "80b0950cf227efcd1ff751a85f4283c06ffa353fbd204dd1a4be09bd29e5274e",
    width=32,
    layers=4,
    unshuffle=2,
    weight_step=2.0**-12,
    act_step=2.0**-12,
)
SPECS = {spec.id: spec for spec in (V1, V2) if spec.sha256}  # shipped = pinned by a hash
DEFAULT_ID = max(SPECS)


class RestoreNet(nn.Module):
    """(RGB/256, quality plane) -> RGB correction, optionally on 2x2 pixel blocks.

    The last layer starts at zero, so an untrained network is the identity."""

    def __init__(self, width: int = 16, layers: int = 3, unshuffle: int = 1) -> None:
        super().__init__()
        self.unshuffle = unshuffle
        rgb = 3 * unshuffle * unshuffle
        chans = [rgb + 1] + [width] * (layers - 1) + [rgb]
        self.convs = nn.ModuleList(
            [nn.Conv2d(a, b, 3, padding=1) for a, b in itertools.pairwise(chans)]
        )
        last = self.convs[-1]
        assert isinstance(last, nn.Conv2d)
        nn.init.zeros_(last.weight)
        assert last.bias is not None
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor, *, act_step: float | None = None) -> torch.Tensor:
        """x: N x 4 x H x W (H, W even when unshuffling). With ``act_step`` every layer's
        output is rounded to a multiple of it (the exact decoder); without, plain float."""
        s = self.unshuffle
        rgb, q = x[:, :3], x[:, 3:]
        h = torch.cat([F.pixel_unshuffle(rgb, s), q[:, :, ::s, ::s]], 1) if s > 1 else x
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if i < len(self.convs) - 1:
                h = torch.relu_(h)
            if act_step is not None:  # h / step * step by powers of two: exact, in place
                h = h.mul_(1.0 / act_step).round_().mul_(act_step)
        return rgb + (F.pixel_shuffle(h, s) if s > 1 else h)


def build(spec: Spec) -> RestoreNet:
    return RestoreNet(spec.width, spec.layers, spec.unshuffle)


def net_input(rgb: np.ndarray, quality: int) -> torch.Tensor:
    """HxWx3 uint8 + base quality -> 1x4xHxW float64 tensor of dyadic values."""
    x = torch.from_numpy(rgb.astype(np.float64) / 256.0).permute(2, 0, 1)
    q = torch.full_like(x[:1], float(quality) / 128.0)
    return torch.cat([x, q])[None]


def quantise_(model: RestoreNet, step: float) -> None:
    """Round every parameter to a multiple of ``step`` (and keep it that way)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.round(p / step) * step)


class WeightsChanged(RuntimeError):
    """A registered weights file no longer matches its pinned hash."""


_loaded: dict[int, tuple[RestoreNet, str]] = {}


def load_restorer(weights_id: int = DEFAULT_ID) -> tuple[RestoreNet, str] | None:
    """The registered network (exact, float64) and its version; None when not registered or
    not shipped. Raises ``WeightsChanged`` when the file differs from the pinned hash."""
    spec = SPECS.get(weights_id)
    if spec is None or not spec.path.exists():
        return None
    if weights_id not in _loaded:
        blob = spec.path.read_bytes()
        digest = hashlib.sha256(blob).hexdigest()
        if digest != spec.sha256:
            raise WeightsChanged(f"{spec.file} changed (sha256 {digest}); old streams need it")
        state = torch.load(spec.path, map_location="cpu", weights_only=True)
        model = build(spec).double()
        model.load_state_dict(state)
        quantise_(model, spec.weight_step)
        model.eval()
        _loaded[weights_id] = (model, f"{spec.path.stem}-{digest[:12]}")
    return _loaded[weights_id]


def _even(rgb: np.ndarray) -> np.ndarray:
    """Edge-replicate to even height and width (2x2 blocks need them)."""
    h, w = rgb.shape[:2]
    return np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


@contextmanager
def torch_single_threaded() -> Iterator[None]:
    """Callers here run their own threads (restoration strips, side-by-side searches); torch's
    threads on top of them oversubscribe the cores (measured on a loaded 2-core machine: one
    MS-SSIM reference 3.6 s with 2 torch threads, 0.16 s with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _strips(height: int, parts: int, align: int) -> list[tuple[int, int]]:
    """``parts`` row ranges covering ``height``, each starting at a multiple of ``align``."""
    size = -(-height // parts)
    size += (-size) % align
    return [(y, min(height, y + size)) for y in range(0, height, size)]


_F32_INTEGERS = 2**24  # float32 represents every integer of smaller magnitude exactly


@dataclass(frozen=True)
class _IntLayer:
    """One convolution in integer units: weight / weight_step as float32 (exact: < 2^24)."""

    weight: torch.Tensor
    bias: torch.Tensor  # float64, in real units (added after the exact integer sum)
    digit_bits: int  # split the input into base-2^digit_bits digits
    row_sum: int  # the largest sum of |weight| over one output value's inputs


_int_layers: dict[int, list[_IntLayer]] = {}


def _layers(model: RestoreNet, spec: Spec) -> list[_IntLayer]:
    if spec.id not in _int_layers:
        layers = []
        for conv in model.convs:
            assert isinstance(conv, nn.Conv2d) and conv.bias is not None
            w = conv.weight.detach() / spec.weight_step  # integers (``quantise_``)
            row_sum = int(w.abs().sum(dim=(1, 2, 3)).max())
            # a digit d < 2^bits times the weights sums to at most (2^bits - 1) * row_sum
            bits = ((_F32_INTEGERS - 1) // max(1, row_sum)).bit_length() - 1  # < 1: float64
            layers.append(_IntLayer(w.float(), conv.bias.detach().clone(), bits, row_sum))
        _int_layers[spec.id] = layers
    return _int_layers[spec.id]


def _exact_conv(a: torch.Tensor, top: float, layer: _IntLayer, spec: Spec) -> torch.Tensor:
    """The float64 convolution's exact value for ``a``: float32 integers in [0, 2^24) whose
    largest is ``top``, the layer's input in activation-step units. Each base-2^digit_bits digit
    plane is convolved in float32 (exact: every partial sum < 2^24) and the planes are
    recombined in float64; the integer sum times act_step x weight_step (a power of two) plus
    the bias is exact too."""
    base = float(2**layer.digit_bits)
    total: torch.Tensor | None = None
    scale = 1.0
    while True:
        top = math.floor(top / base)
        if top == 0:  # the last digit: what is left is below the base
            digit = a
        else:  # floor and power-of-two scaling of float32 integers: exact
            high = torch.floor(a * (1.0 / base))
            digit = a.sub_(high * base)
            a = high
        part = F.conv2d(digit, layer.weight, padding=1).to(torch.float64)
        total = part if total is None else total.add_(part.mul_(scale))
        if top == 0:
            return total.mul_(spec.act_step * spec.weight_step).add_(layer.bias[:, None, None])
        scale *= base


def _exact_convs(model: RestoreNet, spec: Spec, x: torch.Tensor) -> torch.Tensor:
    """``model(x, act_step=spec.act_step)``, bit for bit, with float32 digit convolutions.
    ``x`` is ``net_input``'s: non-negative multiples of the activation step (checked); every
    later input is a ReLU output rounded to the step, so non-negative multiples too."""
    s = model.unshuffle
    rgb, q = x[:, :3], x[:, 3:]
    h = torch.cat([F.pixel_unshuffle(rgb, s), q[:, :, ::s, ::s]], 1) if s > 1 else x
    units = h / spec.act_step  # each layer's input in step units (exact: a power of two)
    if not units.numel() or float(units.min()) < 0 or not torch.equal(units, units.round()):
        return model(x, act_step=spec.act_step)
    for i, (conv, layer) in enumerate(zip(model.convs, _layers(model, spec), strict=True)):
        top = float(units.max())
        if layer.digit_bits >= 1 and top < _F32_INTEGERS:
            h = _exact_conv(units.to(torch.float32), top, layer, spec)
        else:  # beyond float32's integers: the float64 form (not seen with shipped weights)
            h = conv(units * spec.act_step)
        if i < len(model.convs) - 1:
            h = torch.relu_(h)
        units = h.mul_(1.0 / spec.act_step).round_()  # the forward's rounding, kept in units
    out = units.mul_(spec.act_step)
    return rgb + (F.pixel_shuffle(out, s) if s > 1 else out)


_f32_checked: dict[int, bool] = {}


def _float32_convs_exact(model: RestoreNet, spec: Spec) -> bool:
    """Once per weights id: does this process's float32 convolution sum digit x weight
    products exactly? Checked per layer against float64 on digits at their largest (the
    partial-sum bound) and random ones, then end to end on a random input."""
    if spec.id not in _f32_checked:
        gen = torch.Generator().manual_seed(spec.id)
        ok = True
        with torch.no_grad():
            for layer in _layers(model, spec):
                if layer.digit_bits < 1:
                    continue  # that layer runs in float64
                top = (1 << layer.digit_bits) - 1
                shape = (1, layer.weight.shape[1], 16, 16)
                digits = torch.randint(0, top + 1, shape, generator=gen).double()
                digits[:, :, :8] = top
                want = F.conv2d(digits, layer.weight.double(), padding=1)
                got = F.conv2d(digits.float(), layer.weight, padding=1).double()
                ok = ok and torch.equal(got, want)
            x = torch.randint(0, 256, (1, 4, 16, 16), generator=gen).double() / 256.0
            ok = ok and torch.equal(_exact_convs(model, spec, x), model(x, act_step=spec.act_step))
        _f32_checked[spec.id] = ok
    return _f32_checked[spec.id]


def _exact_forward(model: RestoreNet, spec: Spec, x: torch.Tensor, threads: int) -> torch.Tensor:
    """The network on horizontal strips side by side. Each strip is computed with ``halo``
    extra rows on either side (clipped at the image, where the zero padding is the same as
    for the whole image), which is every row its output depends on; in exact arithmetic the
    stitched result is identical to computing the whole image at once."""
    height = x.shape[2]
    halo = spec.layers * spec.unshuffle

    def strip(rows: tuple[int, int]) -> torch.Tensor:
        y0, y1 = rows
        a, b = max(0, y0 - halo), min(height, y1 + halo)
        if fast:
            out = _exact_convs(model, spec, x[:, :, a:b])
        else:
            out = model(x[:, :, a:b], act_step=spec.act_step)
        return out[:, :, y0 - a : y1 - a]

    with torch.no_grad(), torch_single_threaded(), ThreadPoolExecutor(threads) as pool:
        fast = _float32_convs_exact(model, spec)
        return torch.cat(list(pool.map(strip, _strips(height, threads, spec.unshuffle))), dim=2)


def restore(
    rgb: np.ndarray, quality: int, weights_id: int = DEFAULT_ID, *, threads: int = 2
) -> np.ndarray:
    """Apply registered restoration network ``weights_id`` to a decoded base image (bit-exact
    everywhere, whatever ``threads``); the input unchanged when those weights are not shipped."""
    loaded = load_restorer(weights_id)
    if loaded is None:
        return rgb
    model, _version = loaded
    spec = SPECS[weights_id]
    h, w = rgb.shape[:2]
    padded = _even(rgb) if spec.unshuffle > 1 else rgb
    out = _exact_forward(model, spec, net_input(padded, quality), threads)[0, :, :h, :w]
    pixels = torch.clamp(torch.round(out * 256.0), 0, 255).to(torch.uint8)
    return pixels.permute(1, 2, 0).contiguous().numpy()
