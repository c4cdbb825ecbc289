"""A short clip generated with PyAV: compacted lossy and lossless, and decoded back."""

from __future__ import annotations

import io

import av
import numpy as np

from compaction import ingest, pipeline, video
from tests.codec.images import synthetic


def _clip(frames: int = 6) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as box:
        stream = box.add_stream("libx264", rate=10, options={"crf": "10"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(
                np.roll(synthetic(48, 64, seed=1), i, 1), format="rgb24"
            )
            for packet in stream.encode(frame):
                box.mux(packet)
        for packet in stream.encode():
            box.mux(packet)
    return buf.getvalue()


def test_video_round_trip_lossy_and_lossless() -> None:
    data = _clip()
    media = ingest.decode_media(data)
    assert media.kind == "video" and len(media.frames) == 6 and media.container == "mp4"
    lossy = pipeline.compact_media(
        media, data, quality_target=60, preference="auto", compact_id="cmp_v"
    )
    assert lossy.body["codec"]["mode"] == "lossy" and lossy.body["meets_target"]
    assert len(video.decode_video_bytes(lossy.bitstream)) == 6
    exact = pipeline.compact_media(
        media, data, quality_target=100, preference="auto", compact_id="cmp_v"
    )
    assert exact.body["bit_exact"] is True
    decoded = video.decode_video_bytes(exact.bitstream)
    assert all(np.array_equal(a, b) for a, b in zip(media.frames, decoded, strict=True))
