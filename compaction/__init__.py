"""CompactEdge: media compaction with a learned codec, lossless restoration and certificates."""
