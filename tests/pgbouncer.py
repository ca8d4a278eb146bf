"""A PgBouncer of the test's own (Debian's pgbouncer package), in transaction pooling mode, in
front of the test's PostgreSQL: what docs/operations.md recommends beyond ~90 connections."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.net_faults import free_port, wait_for_port
from tests.services import require_binary


@contextmanager
def pgbouncer(database_url: str, *, pool_size: int = 2) -> Iterator[str]:
    """A transaction-pooling PgBouncer for `database_url`'s server; yields the URL through it."""
    binary = require_binary("pgbouncer", "apt-get install -y pgbouncer")
    url = make_url(database_url)
    port = free_port()
    # PgBouncer refuses to run as root, so it runs as postgres: its files live where that user
    # can reach them (pytest's tmp_path is private to root).
    directory = Path(tempfile.mkdtemp(prefix="jw-pgbouncer-"))
    os.chmod(directory, 0o777)
    users = directory / "users.txt"
    users.write_text(f'"{url.username}" ""\n')
    config = directory / "pgbouncer.ini"
    config.write_text(
        "\n".join(
            [
                "[databases]",
                f"* = host={url.host or '127.0.0.1'} port={url.port or 5432}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {users}",
                "pool_mode = transaction",
                f"default_pool_size = {pool_size}",
                "max_client_conn = 200",
                f"logfile = {directory / 'pgbouncer.log'}",
                f"pidfile = {directory / 'pgbouncer.pid'}",
                "",
            ]
        )
    )
    for path in (users, config):
        os.chmod(path, 0o644)
    user = ["-u", "postgres"] if os.geteuid() == 0 else []
    process = subprocess.Popen(
        [binary, *user, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        try:
            wait_for_port(port)
        except AssertionError:
            log = directory / "pgbouncer.log"
            raise AssertionError(
                f"pgbouncer did not start:\n{log.read_text() if log.exists() else ''}"
            ) from None
        yield url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(directory, ignore_errors=True)
