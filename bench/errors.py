"""The bench's one error: it could not measure what it set out to."""

from __future__ import annotations


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to (a step failed, a run timed out)."""
