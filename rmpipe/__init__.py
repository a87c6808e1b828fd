"""rmpipe's application layer: what a user runs above the stages (export, serve, rerank)."""
