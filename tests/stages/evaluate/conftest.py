"""Fixtures for the evaluate stage: the fit stage's toy project (fast head settings, one thread)."""

from tests.stages.fit.conftest import _one_thread, fast_fit, project  # noqa: F401  (fixtures)
