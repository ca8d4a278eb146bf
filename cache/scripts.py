"""The cache's Lua scripts, loaded from the package's .lua files and bound to one client.

redis-py's Script sends EVALSHA and, on NOSCRIPT (a restarted or SCRIPT FLUSHed server), loads the
script and retries once, so callers never see a missing script.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from redis import Redis
from redis.commands.core import Script

SCRIPT_NAMES = (
    "read",
    "fill_nodes",
    "fill_tenant",
    "invalidate",
    "read_tenant",
    "reserve_send_slots",
)


@cache
def source(name: str) -> str:
    """The Lua text of one script (files ship as package data: see pyproject's cache = *.lua)."""
    if name not in SCRIPT_NAMES:
        raise ValueError(f"unknown cache script {name!r}")
    return files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Scripts:
    read: Script
    fill_nodes: Script
    fill_tenant: Script
    invalidate: Script
    read_tenant: Script
    reserve_send_slots: Script

    @classmethod
    def register(cls, client: Redis) -> Scripts:
        # register_script only computes the SHA1 locally; nothing is sent until the first call.
        return cls(*(client.register_script(source(name)) for name in SCRIPT_NAMES))
