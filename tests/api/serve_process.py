"""`journey-worker serve` as a real process on 127.0.0.1 and a free port, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
JOURNEY_WORKER = ROOT / ".venv" / "bin" / "journey-worker"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command() -> list[str]:
    if JOURNEY_WORKER.exists():
        return [str(JOURNEY_WORKER)]
    return [str(Path(os.environ.get("VIRTUAL_ENV", "")) / "bin" / "journey-worker")]


def vm_kb(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of a process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(field)


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()


@contextmanager
def serve(env: dict[str, str], log: Path, *, timeout: float = 30.0) -> Iterator[Server]:
    port = free_port()
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("API_", "DATABASE_"))},
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        **env,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command(), "serve"], cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"serve exited with {process.returncode}: {log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), 0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"serve did not listen within {timeout}s") from None
                time.sleep(0.1)
        yield Server(f"http://127.0.0.1:{port}", process, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
