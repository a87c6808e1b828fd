"""Sources -> rows of (prompt, response, rating, ...), before splits and simulation.

Four kinds (params ``prepare.source.kind``): ``builtin`` (the offline default world), ``hub``
(the paper's datasets via ``datasets.load_dataset``), ``shared`` (the human-labelled sets in
``../shared/data``) and ``file`` (a user's own logs). Each returns a :class:`Loaded`; what a
source drops (ties, empty responses, ...) is counted by reason, never silently.
"""

from __future__ import annotations

from pipeline.config import SourceParams
from pipeline.errors import RmpipeError
from stages.prepare.rows import Loaded

KINDS = ("builtin", "hub", "shared", "file")


def load_source(src: SourceParams, where: str = "params", covariates=(), feedback: str = "explicit",
                split=None) -> Loaded:
    """Dispatch on ``src.kind``; heavy imports stay inside each adapter."""
    if src.kind == "builtin":
        from stages.prepare.builtin import load_builtin

        return load_builtin(src.rows, src.seed, where)
    if src.kind == "hub":
        from stages.prepare.hub import load_hub

        return load_hub(src, where)
    if src.kind == "shared":
        from stages.prepare.shared import load_shared

        return load_shared(src.name, where, split, src.audit_share, src.seed)
    if src.kind == "file":
        from stages.prepare.logs import load_logs

        return load_logs(src, where, covariates, feedback)
    raise RmpipeError(f"{where}: prepare.source.kind: unknown source {src.kind!r} "
                      f"(expected one of {', '.join(KINDS)})")
