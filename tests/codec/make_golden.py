"""Regenerate the golden bitstreams ON PURPOSE only (a bitstream format or weights change):

python -m tests.codec.make_golden

``lossless_v1.cedg`` is frozen: it was written by the first lossless coder (mode 1), which no
longer encodes; it stays to prove that stored v1 bitstreams still decode exactly.
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
        "lossy": codec.encode_lossy(rgb, 40),
    }
    expected = json.loads((GOLDEN / "golden.json").read_text())
    for name, enc in cases.items():
        (GOLDEN / f"{name}.cedg").write_bytes(enc.bitstream)
        expected[name] = hashlib.sha256(enc.decoded.tobytes()).hexdigest()
    expected["source"] = hashlib.sha256(rgb.tobytes()).hexdigest()
    (GOLDEN / "golden.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(json.dumps(expected, indent=2))


if __name__ == "__main__":
    main()
