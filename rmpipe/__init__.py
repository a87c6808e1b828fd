"""rmpipe's application layer: what a user runs above the stages (the CLI front door, score,
export, serve, rerank)."""
