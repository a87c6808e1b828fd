"""Warnings the fits raise, said once per kind for a whole benchmark run.

``rmpipe fit`` warns (the propensity-trust flag, weak anchors) through :mod:`warnings`, which
prints the message and a source line; a benchmark fits hundreds of heads, and the same warning
with other numbers on every draw buries the progress lines. Here the first of each kind is one
line, and the rest are counted and summed up at the end (the report tabulates them per draw).
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from typing import Callable, Iterator


class OnceNotes:
    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.counts: Counter[str] = Counter()

    @staticmethod
    def kind(message: str) -> str:
        """A warning's kind: its text before the first colon (the numbers come after it)."""
        return message.split(":")[0].strip()

    @contextlib.contextmanager
    def collect(self) -> Iterator[None]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for w in caught:
            message = str(w.message)
            kind = self.kind(message)
            if not self.counts[kind]:
                self.log(f"  note: {message} (said once; later ones are counted at the end)")
            self.counts[kind] += 1

    def summary(self) -> list[str]:
        return [f"note, {n} time(s) in all: {kind}" for kind, n in self.counts.items()]
