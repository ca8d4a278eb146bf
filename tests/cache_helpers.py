"""Helpers shared by the cache tests: a clock the test moves, and a command counter."""

from __future__ import annotations

from typing import Any

import redis


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CommandCounter:
    """Counts the commands a client sends (each is one round trip: the cache never pipelines)."""

    def __init__(self, client: redis.Redis) -> None:
        self.commands: list[str] = []
        original = client.execute_command

        def counting(*args: Any, **options: Any) -> Any:
            self.commands.append(str(args[0]).upper())
            return original(*args, **options)

        client.execute_command = counting  # type: ignore[method-assign]

    def take(self) -> list[str]:
        commands, self.commands = self.commands, []
        return commands
