"""Hypothesis settings for the property tests of plain functions.

No example database (nothing written into the worktree's .hypothesis beyond its caches), no
per-example deadline (a loaded 2-core machine would make one flaky), and a failing example is
printed as a blob that `@reproduce_failure` replays.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings


def property_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
