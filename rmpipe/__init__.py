"""rmpipe's application layer: what a user runs above the stages (serve, rerank)."""
