"""rmpipe's bottom layer: the feedback-table contract and its reader, typed config, the embedding
store, the head folder and the models it holds (the reward head, the nuisance classifiers).

Three layers, each importing only from those below it: ``pipeline/`` (imports neither
``stages`` nor ``rmpipe``), ``stages/`` (one sub-package a DVC stage, built on ``pipeline``), and
``rmpipe/`` (the CLI and the commands a user runs on a fitted head). ``tests/test_layers.py``
holds the rule.
"""
