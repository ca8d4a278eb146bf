"""A bad environment variable stops a command with one line naming it, and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "REDIS_", "CELERY_", "DB_"))
    }
    return subprocess.run(
        args, cwd=ROOT, env=clean | env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL: not a SQLAlchemy URL"),
        ({"DATABASE_URL": "mysql://x@y/z"}, "DATABASE_URL: unsupported database 'mysql'"),
        (
            {"DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/none"},
            "DATABASE_URL: cannot connect",
        ),
        ({"DB_POOL_SIZE": "lots"}, "DB_POOL_SIZE: expected a whole number"),
        # Drift removed: every number is finite and in range, the same everywhere.
        ({"DB_POOL_SIZE": "nan"}, "DB_POOL_SIZE: expected a whole number, got 'nan'"),
        ({"DB_POOL_TIMEOUT": "inf"}, "DB_POOL_TIMEOUT: expected a finite number, got 'inf'"),
        ({"DB_LOCK_TIMEOUT_MS": "-5"}, "DB_LOCK_TIMEOUT_MS: must be at least 0, got '-5'"),
        ({"DB_PGBOUNCER": "maybe"}, "DB_PGBOUNCER: expected true or false, got 'maybe'"),
        ({"DB_SESSION_SETTINGS": "always"}, "DB_SESSION_SETTINGS: expected one of startup"),
        # What hosting platforms hand out is PostgreSQL through psycopg 3: accepted, then
        # refused only because nothing listens on port 1.
        ({"DATABASE_URL": "postgres://postgres@127.0.0.1:1/none"}, "DATABASE_URL: cannot connect"),
        (
            {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"},
            "DATABASE_URL: cannot connect",
        ),
    ],
)
def test_db_commands_print_one_line_and_exit_2(env: dict[str, str], expected: str) -> None:
    result = run([sys.executable, "-m", "worker.cli", "db", "upgrade"], **env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"journey-worker: {expected}"), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        # A slash missing: not a SQLAlchemy URL at all (the old message repeated it whole).
        ("DATABASE_URL", "postgresql:/journey:hunter2@db.internal/journeys"),
        # A port that is not a number (the old code ended in a traceback).
        ("DATABASE_URL", "postgresql://journey:hunter2@db.internal:port/journeys"),
        ("REDIS_URL", "redis://:hunter2@cache.internal:port/0"),
        # No scheme (the old message repeated it whole).
        ("CELERY_BROKER_URL", "journey:hunter2@mq.internal:5672"),
        ("CELERY_BROKER_URL", "kafka://journey:hunter2@mq.internal"),
    ],
)
def test_a_bad_url_never_shows_its_password(variable: str, url: str) -> None:
    result = run([sys.executable, "-m", "worker.cli", "db", "upgrade"], **{variable: url})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"journey-worker: {variable}: "), result.stderr
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CELERY_BROKER_URL": "kafka://x"}, "CELERY_BROKER_URL: unsupported broker URL scheme"),
        (
            {"TASK_TIME_LIMIT_SECONDS": "10", "TASK_SOFT_TIME_LIMIT_SECONDS": "20"},
            "TASK_TIME_LIMIT_SECONDS",
        ),
        ({"DISPATCH_INTERVAL_SECONDS": "soon"}, "DISPATCH_INTERVAL_SECONDS: expected a number"),
        ({"LOOP_GUARD_REPEATS": "0"}, "LOOP_GUARD_REPEATS: must be at least 1"),
        ({"REDIS_URL": "http://cache"}, "REDIS_URL"),
        ({"SMS_PROVIDER": "http"}, "SMS_PROVIDER_URL: required when SMS_PROVIDER=http"),
        # Every worker setting is validated at start, not when first used.
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT: expected one of text, json, got 'xml'"),
        ({"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY: must be at least 1, got '0'"),
        ({"DB_CONNECTION_BUDGET": "ten"}, "DB_CONNECTION_BUDGET: expected a whole number"),
        ({"METRICS_PORT": "70000"}, "METRICS_PORT: must be at most 65535, got '70000'"),
        ({"TASK_MAX_RETRIES": "-1"}, "TASK_MAX_RETRIES: must be at least 0, got '-1'"),
        # Drift removed: these were accepted before (nan < 1 is false, inf is a float).
        ({"REDISPATCH_GRACE_SECONDS": "nan"}, "REDISPATCH_GRACE_SECONDS: expected a finite"),
        ({"LOOP_GUARD_WINDOW_SECONDS": "inf"}, "LOOP_GUARD_WINDOW_SECONDS: expected a finite"),
        ({"DISPATCH_INTERVAL_SECONDS": "nan"}, "DISPATCH_INTERVAL_SECONDS: expected a finite"),
        (
            {"WEBHOOK_ALLOWED_NETWORKS": "10.0.0.0/8,intranet"},
            "WEBHOOK_ALLOWED_NETWORKS: 'intranet' is not an IP network",
        ),
        (
            {"SMS_PROVIDER": "http", "SMS_PROVIDER_URLS": "https://a.test/sms,not a url"},
            "SMS_PROVIDER_URLS: entry 2 is not an http(s) URL with a host",
        ),
    ],
)
def test_the_worker_refuses_to_start_on_a_bad_variable(env: dict[str, str], expected: str) -> None:
    result = run(
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "--loglevel", "ERROR"], **env
    )
    assert result.returncode == 2
    assert f"journey-worker: {expected}" in result.stderr
    assert "Traceback" not in result.stderr


def test_beat_refuses_to_start_on_a_bad_variable() -> None:
    result = run([sys.executable, "-m", "celery", "-A", "worker", "beat"], DB_POOL_SIZE="inf")
    assert result.returncode == 2
    assert "journey-worker: DB_POOL_SIZE: expected a whole number, got 'inf'" in result.stderr
    assert "Traceback" not in result.stderr
