"""Tasks that can be started and stopped one by one while their nursery runs (parts added or
removed by a config reload: an upstream connector's channels, health checks, inbox poller).

Rules
-----
* ``bind(nursery)`` once the owner's nursery is open; ``start(key, fn, *args)`` before that is
  kept and started by ``bind``.
* ``cancel(key)`` stops every task started under ``key`` (its cancel scope); it is
  idempotent. A task that ends on its own forgets its scope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio


class KeyedTasks:
    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None
        self._scopes: dict[str, list[trio.CancelScope]] = {}
        self._waiting: list[tuple[str, Callable[..., Awaitable[Any]], tuple[Any, ...]]] = []

    def bind(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        waiting, self._waiting = self._waiting, []
        for key, fn, args in waiting:
            self.start(key, fn, *args)

    def start(self, key: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self._nursery is None:
            self._waiting.append((key, fn, args))
            return
        scope = trio.CancelScope()
        self._scopes.setdefault(key, []).append(scope)

        async def run() -> None:
            try:
                with scope:
                    await fn(*args)
            finally:
                scopes = self._scopes.get(key, [])
                if scope in scopes:
                    scopes.remove(scope)
                if not scopes:
                    self._scopes.pop(key, None)

        self._nursery.start_soon(run)

    def cancel(self, key: str) -> None:
        self._waiting = [w for w in self._waiting if w[0] != key]
        for scope in self._scopes.pop(key, []):
            scope.cancel()

    def running(self, key: str) -> bool:
        return bool(self._scopes.get(key))
