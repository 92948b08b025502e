"""The ``scheduler`` section: how messages are spread over channels, retried and given up."""

from __future__ import annotations

from typing import Any

import attrs
from yaml.nodes import Node

from .devices import check_order
from .model import AMBIGUOUS_POLICIES, SchedulerConfig
from .reader import Ctx, Map

def load_scheduler(ctx: Ctx, node: Node | None, path: str) -> SchedulerConfig:
    d = SchedulerConfig()
    m = Map(ctx, node, path, [f.name for f in attrs.fields(SchedulerConfig)])

    def seconds(key: str) -> float:
        return m.get_number(key, getattr(d, key), exclusive=True, what="a number of seconds")

    values: dict[str, Any] = {
        "default_validity": seconds("default_validity"),
        "max_validity": seconds("max_validity"),
        "max_attempts": m.get_int("max_attempts", d.max_attempts, lo=1, hi=100),
        "retry_backoff": seconds("retry_backoff"),
        "retry_backoff_max": seconds("retry_backoff_max"),
        "busy_retry": seconds("busy_retry"),
        "logout_cooldown": seconds("logout_cooldown"),
        "quarantine_after": m.get_int("quarantine_after", d.quarantine_after, lo=1),
        "quarantine_base": seconds("quarantine_base"),
        "quarantine_max": seconds("quarantine_max"),
        "ambiguous": m.get_choice("ambiguous", d.ambiguous, AMBIGUOUS_POLICIES),
    }
    for low, high, why in (
        ("default_validity", "max_validity", "the default would always be cut to the maximum"),
        ("retry_backoff", "retry_backoff_max", "the first back-off would already exceed the maximum"),
        ("quarantine_base", "quarantine_max", "the first quarantine would already exceed the maximum"),
    ):
        check_order(m, low, values[low], high, values[high], why, strict=False)
    m.finish()
    return SchedulerConfig(**values)
