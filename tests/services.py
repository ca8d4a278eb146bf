"""Where the real services are, and what to do when one is missing.

Under CI=true a missing service fails the test run; on a developer laptop the tests that need
it are skipped with a loud reason naming the service and how to start it.
"""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlparse

import pytest

PG_ADMIN_URL = os.environ.get(
    "TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")

START_HINTS = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "Redis": "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ''",
    "RabbitMQ": "rabbitmq-server -detached",
}


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url.replace("+psycopg", ""))
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 2
        ):
            return True
    except OSError:
        return False


def require(service: str) -> None:
    url, port = {
        "PostgreSQL": (PG_ADMIN_URL, 5432),
        "Redis": (REDIS_URL, 6379),
        "RabbitMQ": (RABBITMQ_URL, 5672),
    }[service]
    if _reachable(url, port):
        return
    message = f"{service} is not reachable at {url}; start it with: {START_HINTS[service]}"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI requires {service}: {message}", pytrace=False)
    print(f"\n!!! SKIPPING: {message} !!!\n")
    pytest.skip(f"!!! {message} !!!")


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def require_binary(name: str, install: str) -> str:
    """The path of a program the tests need from Debian's packages (.ci/run installs it): fails
    under CI=true when it is missing, skips loudly elsewhere."""
    import shutil

    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found:
        return found
    message = f"{name} is not installed; install it with: {install}"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI requires {name}: {message}", pytrace=False)
    print(f"\n!!! SKIPPING: {message} !!!\n")
    pytest.skip(f"!!! {message} !!!")
