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
    ],
)
def test_db_commands_print_one_line_and_exit_2(env: dict[str, str], expected: str) -> None:
    result = run([sys.executable, "-m", "worker.cli", "db", "upgrade"], **env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"journey-worker: {expected}"), result.stderr
    assert "Traceback" not in result.stderr


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
