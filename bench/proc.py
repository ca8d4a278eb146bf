"""Linux /proc readings: CPU seconds and resident memory of processes, and the CPU of this
database's PostgreSQL backends when the server runs on this machine."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Engine, text


def proc_cpu_seconds(pids: Sequence[int]) -> float | None:
    """User + system CPU seconds of these processes (Linux /proc), None if unreadable."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    try:
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    except (OSError, ValueError, IndexError):
        return None
    return total / ticks


class PgBackendCpu:
    """CPU of this database's PostgreSQL backends, when the server runs on this machine and its
    /proc entries are readable (root, or the postgres user); otherwise every reading is None."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def backend_pids(self) -> list[int]:
        with self.engine.connect() as conn:
            host = conn.execute(text("SELECT inet_server_addr()")).scalar()
            pids = conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                )
            ).scalars()
            result = list(pids)
        local = host is None or str(host).split("/")[0] in ("127.0.0.1", "::1")
        return result if local else []

    def read(self, pids: Sequence[int] | None = None) -> tuple[list[int], float | None]:
        pids = list(pids) if pids is not None else self.backend_pids()
        return pids, (proc_cpu_seconds(pids) if pids else None)


def rss_kb(pids: Sequence[int]) -> dict[int, int]:
    """VmRSS of each process, in kB; processes that are gone are left out."""
    found = {}
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    found[pid] = int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return found
