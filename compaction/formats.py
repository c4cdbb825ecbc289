"""Delivery formats: the names the API accepts and the media types it serves.

Kept apart from ``compaction.renditions`` (which loads the image codecs) so that the API can
validate requests and serve files without importing any codec.
"""

from __future__ import annotations

PREFERENCES = ("webp", "avif", "jpeg", "png", "auto")
MEDIA_TYPES = {
    "webp": "image/webp",
    "avif": "image/avif",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "jxl": "image/jxl",
}
