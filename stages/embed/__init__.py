"""Stage 1: backbones -> the embedding store, once per (backbone, pair)."""
