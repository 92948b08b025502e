"""Receipts matched to what we submitted, whatever the id format: bridge/connectors/receipts.py."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.connectors.receipts import Receipt, ReceiptBook, id_forms, parse_receipt
from bridge.smpp.constants import CommandId as C
from bridge.smpp.constants import MessageState, Tag
from bridge.smpp.pdu import Pdu

STYLES = ["same", "lower", "upper", "padded", "other_base"]


def written(mid: str, style: str, hex_ids: bool) -> str:
    if style == "lower":
        return mid.lower()
    if style == "upper":
        return mid.upper()
    if style == "padded":
        return mid.rjust(20, "0")
    if style == "other_base":
        return str(int(mid, 16)) if hex_ids else format(int(mid), "X")
    return mid


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(1, 2**40), min_size=1, max_size=20, unique=True),
    st.booleans(),
    st.sampled_from(STYLES),
    st.lists(st.booleans(), min_size=20, max_size=20),
)
def test_every_receipt_finds_its_message_in_any_format_and_order(
    numbers: list[int], hex_ids: bool, style: str, early: list[bool]
) -> None:
    # The SMSC's ids (hexadecimal like "0000A1F3" or decimal), each receipt written in the
    # provider's style, arriving before or after the resp that gives us the id.
    ids = [format(n, "08X") if hex_ids else str(n) for n in numbers]
    book = ReceiptBook()
    for i, mid in enumerate(ids):
        receipt = Receipt(written(mid, style, hex_ids), "DELIVRD", None)
        if early[i]:
            assert book.arrived(receipt, 0.0) == "early"
            assert book.submitted(mid) == "matched"
        else:
            assert book.submitted(mid) is None
            assert book.arrived(receipt, 0.0) == "matched"
        assert book.latest(mid) == receipt
        assert book.arrived(receipt, 1.0) == "duplicate"  # the same receipt again changes nothing
    assert book.expire(10_000.0) == []


def test_early_receipt_in_decimal_for_a_hex_resp() -> None:
    # Seen end to end: the receipt (decimal id) came before the resp (hexadecimal id) and was
    # kept under its first form only, so the resp never found it.
    book = ReceiptBook()
    assert book.arrived(Receipt("41459", "DELIVRD", None), 0.0) == "early"
    assert book.submitted("0000A1F3") == "matched"
    assert book.latest("0000A1F3").stat == "DELIVRD"


def test_unmatched_receipts_expire_after_the_grace() -> None:
    book = ReceiptBook(early_grace=60)
    r = Receipt("ffff", "DELIVRD", None)
    assert book.arrived(r, 0.0) == "early"
    assert book.expire(59.0) == []
    assert book.expire(60.0) == [r]
    assert book.expire(120.0) == []


def test_final_receipt_is_not_changed_by_a_later_one() -> None:
    book = ReceiptBook()
    book.submitted("12")
    assert book.arrived(Receipt("12", "ENROUTE", None), 0) == "matched"
    assert book.arrived(Receipt("12", "UNDELIV", "34"), 0) == "matched"
    assert book.arrived(Receipt("12", "DELIVRD", None), 0) == "duplicate"
    assert book.latest("12").stat == "UNDELIV"


def test_id_forms() -> None:
    assert id_forms("0000A1F3") == ["t:a1f3", "n:41459"]
    assert id_forms("41459") == ["t:41459", "n:41459", "n:267353"]
    assert id_forms("  ") == []


def _deliver(text: bytes = b"", tlvs: dict | None = None, esm: int = 0x04) -> Pdu:
    return Pdu(C.DELIVER_SM, 0, 1, {"esm_class": esm, "data_coding": 0, "short_message": text}, tlvs or {})


def test_parse_text_only_tlv_only_and_both() -> None:
    text = b"id:0A1B sub:001 dlvrd:000 submit date:2601010000 done date:2601010000 stat:UNDELIV err:034 Text:hi"
    assert parse_receipt(_deliver(text)) == Receipt("0A1B", "UNDELIV", "34", text.decode())
    tlvs = {Tag.RECEIPTED_MESSAGE_ID: "0A1B", Tag.MESSAGE_STATE: int(MessageState.DELIVERED)}
    assert parse_receipt(_deliver(b"", tlvs, esm=0)) == Receipt("0A1B", "DELIVRD", None, "")
    tlvs[Tag.NETWORK_ERROR_CODE] = bytes((3, 0, 11))
    tlvs[Tag.MESSAGE_STATE] = int(MessageState.UNDELIVERABLE)
    r = parse_receipt(_deliver(text, tlvs))
    assert (r.message_id, r.stat, r.error) == ("0A1B", "UNDELIV", "11")  # the TLVs win


def test_mo_is_not_a_receipt() -> None:
    assert parse_receipt(_deliver(b"id:1 stat:DELIVRD", esm=0)) is None


def test_an_early_receipt_whose_id_reads_as_another_finished_message_in_hex_waits_for_its_own() -> None:
    # "10" read as hexadecimal is sixteen: the early receipt for "16" must not be taken for a
    # repeat of the finished "10" (the message "16" would never get its receipt).
    book = ReceiptBook()
    book.submitted("10")
    assert book.arrived(Receipt("10", "DELIVRD", None), 0.0) == "matched"
    sixteen = Receipt("16", "DELIVRD", None)
    assert book.arrived(sixteen, 1.0) == "early"
    assert book.submitted("16") == "matched"
    assert book.latest("16") == sixteen
    assert book.arrived(Receipt("10", "DELIVRD", None), 2.0) == "duplicate"
