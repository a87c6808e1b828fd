"""One sub-package a stage: prepare, embed, fit, evaluate."""
