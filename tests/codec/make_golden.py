"""Regenerate the golden bitstreams ON PURPOSE only (a bitstream format or weights change):

python -m tests.codec.make_golden

``lossless_v1.cedg`` is frozen: it was written by the first lossless coder (mode 1), which no
longer encodes; it stays to prove that stored v1 bitstreams still decode exactly.

``lossy.cedg`` is a *frozen* version 1 stream (restoration weights id 1, from before streams
named their weights): it is never regenerated, and its entry in golden.json is kept, so the
tests go on proving that old streams decode to the same pixels. ``lossy_v2.cedg`` is a stream
of the current encoder (version 2, the default restoration weights).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from compaction import codec
from tests.codec.images import synthetic

GOLDEN = Path(__file__).parent / "golden"


def main() -> None:
    rgb = synthetic(24, 32, seed=3)
    cases = {
        "lossless": codec.encode_lossless(rgb),
        "lossy_v2": codec.encode_lossy(rgb, 40),
    }
    expected = json.loads((GOLDEN / "golden.json").read_text())  # keeps the frozen v1 entry
    for name, enc in cases.items():
        (GOLDEN / f"{name}.cedg").write_bytes(enc.bitstream)
        expected[name] = hashlib.sha256(enc.decoded.tobytes()).hexdigest()
    expected["source"] = hashlib.sha256(rgb.tobytes()).hexdigest()
    (GOLDEN / "golden.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(json.dumps(expected, indent=2))


if __name__ == "__main__":
    main()
