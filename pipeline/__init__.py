"""rmpipe's spine: the feedback-table contract, typed config, the embedding store and the CLI.

Stages (``stages/``) import from here and never from each other's internals.
"""
