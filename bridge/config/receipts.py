"""The ``receipts`` section: device status to receipt stat, per kind, and receipt modes."""

from __future__ import annotations

from yaml.nodes import Node

from bridge import lifecycle
from .devices import DEVICE_KINDS
from .model import GOIP_DONE_CHOICES, RECEIPT_STATS, ReceiptMapping, ReceiptsConfig
from .reader import Ctx, Map

# The stats a device status may map to: those whose state the lifecycle allows after a device
# took the message (lifecycle.DEVICE_FINAL). DELETED is cancel_sm's alone.
DEVICE_RECEIPT_STATS = tuple(
    s for s in RECEIPT_STATS if lifecycle.STAT_STATE[s] in lifecycle.DEVICE_FINAL
)


def _device_stat_problem(value: str) -> str | None:
    if value.upper() not in RECEIPT_STATS:
        return f"expected a receipt stat: one of {', '.join(DEVICE_RECEIPT_STATS)}, got {value!r}"
    if value.upper() not in DEVICE_RECEIPT_STATS:
        return (
            f"expected a receipt stat a device status can lead to: one of {', '.join(DEVICE_RECEIPT_STATS)}, "
            f"got {value!r} (only cancel_sm deletes a message, never a device)"
        )
    return None


def _stat_problem(value: str) -> str | None:
    if value.upper() in RECEIPT_STATS:
        return None
    return f"expected a receipt stat: one of {', '.join(RECEIPT_STATS)}, got {value!r}"


def _load_receipt_map(ctx: Ctx, node: Node | None, path: str) -> dict[str, dict[str, ReceiptMapping]]:
    m = Map(
        ctx, node, path, DEVICE_KINDS,
        what='a mapping of device kind to status overrides, like goip_http: {"2172": {stat: UNDELIV, err: 172}}',
    )
    result: dict[str, dict[str, ReceiptMapping]] = {}
    for kind in DEVICE_KINDS:
        kind_node = m.node(kind)
        if kind_node is None:
            continue
        km = Map(
            ctx, kind_node, m.path_of(kind), (),
            what='a mapping of device status code to receipt, like "2172": {stat: UNDELIV, err: 172}',
        )
        table: dict[str, ReceiptMapping] = {}
        for code in km.entry_names():
            km.declare((code,))
            rm = Map(
                ctx, km.node(code), km.path_of(code), ("stat", "err"),
                what="a receipt (a mapping with stat and err), like {stat: UNDELIV, err: 172}",
            )
            if not rm.ok:
                continue
            if not code.strip():
                ctx.error(km.path_of(code), km.key_line(code), "expected a device status code, got an empty key")
            stat_ = rm.get_str(
                "stat", None, what=f"a receipt stat: one of {', '.join(DEVICE_RECEIPT_STATS)}", required=True,
                check=_device_stat_problem,
            )
            err = rm.get_int("err", 0, lo=0, hi=999)
            rm.finish()
            if isinstance(stat_, str) and not rm.bad and code.strip():
                table[code.strip()] = ReceiptMapping(stat=stat_.upper(), err=err)
        km.finish()
        result[kind] = table
    m.finish()
    return result


def load_receipts(ctx: Ctx, node: Node | None, path: str) -> ReceiptsConfig:
    d = ReceiptsConfig()
    m = Map(ctx, node, path, ("goip_done", "no_report", "retention", "map"))
    config = ReceiptsConfig(
        goip_done=m.get_choice("goip_done", d.goip_done, GOIP_DONE_CHOICES),
        no_report=m.get_choice("no_report", d.no_report, GOIP_DONE_CHOICES),
        retention=m.get_number("retention", d.retention, exclusive=True, what="a number of seconds"),
        map=_load_receipt_map(ctx, m.node("map"), m.path_of("map")),
    )
    m.finish()
    return config


# -- inbound SMS -----------------------------------------------------------------------------
