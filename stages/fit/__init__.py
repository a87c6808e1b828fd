"""Stage 2: propensity, noise rates and the CausalRM reward head on cached embeddings."""
