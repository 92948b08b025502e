"""A device's status of one part, as the part's stored result."""

from __future__ import annotations

from ..devices.base import DeliveryState, StatusResult


def part_result(status: StatusResult) -> tuple[str, str | None]:
    s = status.state
    if s is DeliveryState.DELIVERED:
        return ("delivered", None)
    if s is DeliveryState.SENT:
        return ("network", None)
    if s is DeliveryState.FAILED:
        return ("failed", status.error_code)
    return ("unknown", None)
