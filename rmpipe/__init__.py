"""rmpipe's application layer: commands that sit above the stages (export, ...)."""
