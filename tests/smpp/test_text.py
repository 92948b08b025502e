"""bridge.smpp.text: data_coding decoding, GSM 03.38, septet packing, splitting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.smpp.text import (
    ASCII_GSM_SAFE,
    GSM7_EXTENSION_CHARS,
    SplitResult,
    alphabet,
    decode_short_message,
    encode_for_esme,
    gsm7_encode,
    gsm7_length,
    gsm7_pack,
    gsm7_split_user_data,
    gsm7_unpack,
    gsm7_user_data,
    is_flash,
    is_gsm7,
    message_class,
    part_count,
    split_text,
    to_ascii_gsm_safe,
    ucs2_length,
    udh_fill_bits,
)

# TS 23.038 §6.2.1 default alphabet, written out independently of the gsm0338 package.
# "\x1b" at 0x1B is the escape, not a character.
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
GSM_EXTENSION = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}
BASIC_PAIRS = [(code, ch) for code, ch in enumerate(GSM_BASIC) if code != 0x1B]
ALL_GSM = "".join(ch for _, ch in BASIC_PAIRS) + "".join(GSM_EXTENSION.values())

gsm_text = st.text(alphabet=st.sampled_from(ALL_GSM), max_size=700)
any_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(ALL_GSM),
        st.sampled_from("яЖЩшΩ中文😀🎉👍🏽"),
        st.characters(exclude_categories=("Cs",)),
    ),
    max_size=400,
)


def test_table_is_complete() -> None:
    assert len(GSM_BASIC) == 128
    assert GSM7_EXTENSION_CHARS == frozenset(GSM_EXTENSION.values())


# --- GSM 03.38 round trips -------------------------------------------------------------------


@pytest.mark.parametrize(("code", "ch"), BASIC_PAIRS)
def test_every_basic_char_round_trips(code: int, ch: str) -> None:
    assert encode_for_esme(ch) == (0, bytes([code]))
    assert decode_short_message(0, bytes([code])) == ch
    assert gsm7_length(ch) == 1


@pytest.mark.parametrize(("code", "ch"), sorted(GSM_EXTENSION.items()))
def test_every_extension_char_round_trips(code: int, ch: str) -> None:
    assert encode_for_esme(ch) == (0, bytes([0x1B, code]))
    assert decode_short_message(0, bytes([0x1B, code])) == ch
    assert gsm7_length(ch) == 2


def test_whole_alphabet_round_trips() -> None:
    dc, data = encode_for_esme(ALL_GSM)
    assert dc == 0
    assert len(data) == 127 + 2 * 10
    assert decode_short_message(0, data) == ALL_GSM


def test_at_pound_euro() -> None:
    assert encode_for_esme("@£€") == (0, b"\x00\x01\x1b\x65")
    assert decode_short_message(0, b"\x00\x01\x1b\x65") == "@£€"
    assert gsm7_length("@£€") == 4


def test_escape_followed_by_unknown_code_shows_basic_char() -> None:
    # TS 23.038: a receiver shows the basic-table character for an undefined extension code.
    assert decode_short_message(0, b"\x1bA") == "A"
    assert decode_short_message(0, b"x\x1b\x00y") == "x@y"


def test_double_escape_is_a_space_and_trailing_escape_dropped() -> None:
    assert decode_short_message(0, b"a\x1b\x1bb") == "a b"
    assert decode_short_message(0, b"abc\x1b") == "abc"
    assert decode_short_message(0, b"\x1b") == ""


def test_escape_control_char_is_not_gsm() -> None:
    # gsm0338 would encode U+001B as a bare ESC, so "\x1be" would come back as "€".
    assert not is_gsm7("\x1be")
    assert encode_for_esme("\x1be") == (8, b"\x00\x1b\x00e")
    with pytest.raises(ValueError):
        gsm7_encode("\x1b")


def test_small_c_cedilla_is_not_gsm() -> None:
    assert is_gsm7("Ç")
    assert not is_gsm7("ç")
    assert encode_for_esme("ç") == (8, b"\x00\xe7")


def test_gsm7_length_rejects_non_gsm() -> None:
    assert gsm7_length("a€{") == 5
    assert gsm7_length("") == 0
    with pytest.raises(ValueError):
        gsm7_length("Я")


def test_high_octets_under_dc0_are_read_as_8bit_text() -> None:
    assert decode_short_message(0, "café".encode()) == "café"
    assert decode_short_message(0, b"caf\xe9") == "café"


# --- data_coding 1 ---------------------------------------------------------------------------


def test_dc1_plain_ascii() -> None:
    assert decode_short_message(1, b"user@example.com costs $5_[x]") == (
        "user@example.com costs $5_[x]"
    )
    assert decode_short_message(1, b"line1\r\nline2") == "line1\r\nline2"


def test_dc1_node_smpp_gsm_bytes() -> None:
    # node-smpp's own encoding samples for data_coding 1.
    assert decode_short_message(1, bytes([0, 1, 2, 3])) == "@£$¥"
    assert decode_short_message(1, bytes([0x1B, 0x3D, 0x1B, 0x14, 0x1B, 0x65])) == "~^€"
    assert decode_short_message(1, b"mail\x00example.com") == "mail@example.com"
    # 0x7F is 'à' in GSM, DEL in ASCII: GSM.
    assert decode_short_message(1, b"voil\x7f") == "voilà"


def test_dc1_known_ambiguity_and_overrides() -> None:
    # "Schön" from node-smpp has no control octet: read as ASCII (documented limitation).
    assert decode_short_message(1, b"Sch|n") == "Sch|n"
    assert decode_short_message(1, b"Sch|n", ia5="gsm") == "Schön"
    assert decode_short_message(1, b"\x00", ia5="ascii") == "\x00"
    assert decode_short_message(1, "é".encode()) == "é"


# --- other codings ---------------------------------------------------------------------------


def test_latin1_cyrillic_hebrew() -> None:
    assert decode_short_message(3, b"caf\xe9 \xa3") == "café £"
    assert decode_short_message(6, "Привет".encode("iso8859_5")) == "Привет"
    assert decode_short_message(7, "שלום".encode("iso8859_8")) == "שלום"
    assert decode_short_message(0x0A, "日本".encode("iso2022_jp")) == "日本"
    assert decode_short_message(0x0E, "한국".encode("euc_kr")) == "한국"


def test_ucs2_bmp_and_surrogate_pairs() -> None:
    assert decode_short_message(8, "Привет".encode("utf-16-be")) == "Привет"
    assert decode_short_message(8, b"\xd8\x3d\xde\x00") == "😀"
    assert decode_short_message(8, "a😀b👍🏽".encode("utf-16-be")) == "a😀b👍🏽"


def test_ucs2_broken_input_is_replaced_not_raised() -> None:
    assert decode_short_message(8, b"\x00A\x00") == "A\ufffd"  # odd length
    assert decode_short_message(8, b"\xd8\x3d\x00A") == "\ufffdA"  # lone high surrogate
    assert decode_short_message(8, b"\xde\x00") == "\ufffd"  # lone low surrogate


@pytest.mark.parametrize("dc", [0x02, 0x04, 0x14, 0x15, 0x04 | 0x40, 0xF4, 0xF5, 0xF6, 0xF7])
def test_binary_codings_return_none(dc: int) -> None:
    assert decode_short_message(dc, b"\x00\xff\x10") is None


def test_compressed_returns_none() -> None:
    assert alphabet(0x20) == "compressed"
    assert decode_short_message(0x20, b"abc") is None
    assert decode_short_message(0x38, b"abc") is None


@pytest.mark.parametrize(
    ("dc", "data", "expected"),
    [
        (0x10, b"\x00hi", "@hi"),  # general group, GSM 7-bit, class 0
        (0x11, b"\x00hi", "@hi"),
        (0x0C | 0x10, b"\x00hi", "@hi"),  # reserved alphabet 11 -> GSM 7-bit (TS 23.038 §4)
        (0x18, "Ж".encode("utf-16-be"), "Ж"),  # general group, UCS2, class 0
        (0x48, "Ж".encode("utf-16-be"), "Ж"),  # automatic deletion group, UCS2
        (0xC0, b"\x00", "@"),  # MWI discard, GSM
        (0xD8, b"\x00", "@"),  # MWI store, GSM
        (0xE0, "Ж".encode("utf-16-be"), "Ж"),  # MWI store, UCS2
        (0xF0, b"\x00\x1b\x65", "@€"),  # class group, GSM 7-bit
        (0xF3, b"\x00", "@"),
    ],
)
def test_gsm_dcs_groups(dc: int, data: bytes, expected: str) -> None:
    assert decode_short_message(dc, data) == expected


@pytest.mark.parametrize("dc", [0x05, 0x09, 0x0B, 0x0C, 0x0D, 0x0F, 0x80, 0x9A, 0xBF])
def test_unknown_codings_are_latin1(dc: int) -> None:
    assert alphabet(dc) == "latin_1"
    assert decode_short_message(dc, b"caf\xe9\x00") == "café\x00"


@given(st.integers(0, 255), st.binary(max_size=300))
@settings(max_examples=300)
def test_decode_never_raises(dc: int, data: bytes) -> None:
    result = decode_short_message(dc, data)
    assert result is None or isinstance(result, str)


@pytest.mark.parametrize(
    ("dc", "cls"),
    [
        (0x00, None), (0x01, None), (0x08, None), (0x0F, None),
        (0x10, 0), (0x11, 1), (0x12, 2), (0x13, 3), (0x18, 0), (0x1A, 2),
        (0x03 | 0x00, None), (0x40, None), (0x50, 0), (0x5B, 3),
        (0xC0, None), (0xE3, None), (0xF0, 0), (0xF1, 1), (0xF6, 2), (0xF7, 3), (0x80, None),
    ],
)  # fmt: skip
def test_message_class(dc: int, cls: int | None) -> None:
    assert message_class(dc) == cls
    assert is_flash(dc) == (cls == 0)


# --- encode_for_esme ---------------------------------------------------------------------------


def test_encode_for_esme() -> None:
    assert encode_for_esme("Hello") == (0, b"Hello")
    assert encode_for_esme("") == (0, b"")
    assert encode_for_esme("Привет") == (8, "Привет".encode("utf-16-be"))
    assert encode_for_esme("hi 😀") == (8, b"\x00h\x00i\x00 \xd8\x3d\xde\x00")


@given(any_text)
def test_encode_for_esme_round_trips(text: str) -> None:
    dc, data = encode_for_esme(text)
    assert dc in (0, 8)
    assert (dc == 0) == is_gsm7(text)
    assert decode_short_message(dc, data) == text


# --- septet packing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "packed"),
    [
        ("hellohello", "E8329BFD4697D9EC37"),
        ("hello", "E8329BFD06"),
        ("12345678", "31D98C56B3DD70"),  # 8 septets fill exactly 7 octets
        ("How are you?", "C8F71D14969741F977FD07"),
        ("", ""),
    ],
)
def test_pack_known_vectors(text: str, packed: str) -> None:
    septets = gsm7_encode(text)
    assert gsm7_pack(septets).hex().upper() == packed
    assert gsm7_unpack(bytes.fromhex(packed), len(septets)) == septets


def test_pack_with_fill_bits() -> None:
    # 'h' = 0x68, 'i' = 0x69 after one zero fill bit: bits 0 + 1101000 + 1101001 (LSB first)
    assert gsm7_pack(b"hi", 1) == b"\xd0\x69"
    assert gsm7_unpack(b"\xd0\x69", 2, 1) == b"hi"
    assert gsm7_pack(b"hi") == b"\xe8\x34"
    # six fill bits: 6 + 7 = 13 bits -> 2 octets
    assert gsm7_pack(b"\x7f", 6) == b"\xc0\x1f"


def test_pack_errors() -> None:
    with pytest.raises(ValueError):
        gsm7_pack(b"\x80")
    with pytest.raises(ValueError):
        gsm7_pack(b"a", 7)
    with pytest.raises(ValueError):
        gsm7_unpack(b"\xe8\x32", 3)  # 16 bits < 21
    with pytest.raises(ValueError):
        gsm7_unpack(b"\xe8", 1, 2)  # 2 + 7 > 8


@given(st.binary(max_size=300).map(lambda b: bytes(x & 0x7F for x in b)), st.integers(0, 6))
def test_pack_unpack_round_trip(septets: bytes, fill: int) -> None:
    packed = gsm7_pack(septets, fill)
    expected_len = (fill + 7 * len(septets) + 7) // 8 if septets else 0
    assert len(packed) == expected_len
    assert gsm7_unpack(packed, len(septets), fill) == septets


def test_udh_fill_bits() -> None:
    assert udh_fill_bits(6) == 1  # 05 00 03 ...: 48 bits + 1 = 7 septets
    assert udh_fill_bits(7) == 0  # 06 08 04 ...: 56 bits = 8 septets
    assert udh_fill_bits(1) == 6
    assert udh_fill_bits(0) == 0


def test_user_data_with_concat_udh() -> None:
    udh8 = bytes.fromhex("0500032A0201")
    septets = gsm7_encode("a" * 153)
    udl, ud = gsm7_user_data(septets, udh8)
    assert udl == 160
    assert len(ud) == 140  # a full 140-octet TP-UD
    assert ud[:6] == udh8
    assert ud[6] == (0x61 << 1) & 0xFF  # first septet after one fill bit
    assert gsm7_split_user_data(ud, udl, True) == (udh8, septets)

    udh16 = bytes.fromhex("0608041234 0302".replace(" ", ""))
    septets = gsm7_encode("b" * 152)
    udl, ud = gsm7_user_data(septets, udh16)
    assert udl == 160
    assert len(ud) == 140
    assert gsm7_split_user_data(ud, udl, True) == (udh16, septets)

    udl, ud = gsm7_user_data(gsm7_encode("hellohello"))
    assert (udl, ud.hex().upper()) == (10, "E8329BFD4697D9EC37")
    assert gsm7_split_user_data(ud, udl, False) == (b"", b"hellohello")


def test_split_user_data_errors() -> None:
    with pytest.raises(ValueError):
        gsm7_split_user_data(b"", 0, True)
    with pytest.raises(ValueError):
        gsm7_split_user_data(b"\x09\x00\x03", 10, True)
    with pytest.raises(ValueError):
        gsm7_split_user_data(bytes.fromhex("0500032A0201"), 3, True)


# --- splitting -------------------------------------------------------------------------------


def _lens(result: SplitResult) -> list[int]:
    if result.encoding == "gsm7":
        return [gsm7_length(p) for p in result.parts]
    return [ucs2_length(p) for p in result.parts]


@pytest.mark.parametrize(
    ("n", "lens"),
    [
        (0, [0]),
        (1, [1]),
        (160, [160]),
        (161, [153, 8]),
        (306, [153, 153]),
        (307, [153, 153, 1]),
        (459, [153, 153, 153]),
        (460, [153, 153, 153, 1]),
    ],
)
def test_gsm_split_boundaries(n: int, lens: list[int]) -> None:
    result = split_text("a" * n)
    assert result.encoding == "gsm7"
    assert _lens(result) == lens
    assert part_count("a" * n) == len(lens)
    assert result.count == len(lens)


def test_gsm_extension_char_never_split() -> None:
    # 158 + 2 = 160 septets: still one part
    assert split_text("a" * 158 + "€").parts == ["a" * 158 + "€"]
    # 159 + 2 = 161: two parts, 153 a's then 6 a's + €
    assert split_text("a" * 159 + "€").parts == ["a" * 153, "a" * 6 + "€"]
    # € would straddle 153: the first part stops at 152 septets
    result = split_text("a" * 152 + "€" + "b" * 10)
    assert result.parts == ["a" * 152, "€" + "b" * 10]
    assert _lens(result) == [152, 12]
    # € ending exactly on 153
    result = split_text("a" * 151 + "€" + "b" * 10)
    assert result.parts == ["a" * 151 + "€", "b" * 10]
    # straddling the second boundary (153 * 2 = 306)
    text = "a" * 153 + "a" * 152 + "{" + "c" * 5
    assert split_text(text).parts == ["a" * 153, "a" * 152, "{" + "c" * 5]


def test_escape_stays_with_its_char_in_encoded_parts() -> None:
    for part in split_text("x" * 152 + "[]" * 100).parts:
        data = gsm7_encode(part)
        assert len(data) <= 153
        assert not data.endswith(b"\x1b") or data.endswith(b"\x1b\x1b")
        assert decode_short_message(0, data) == part


@pytest.mark.parametrize(
    ("n", "lens"),
    [(70, [70]), (71, [67, 4]), (134, [67, 67]), (135, [67, 67, 1])],
)
def test_ucs2_split_boundaries(n: int, lens: list[int]) -> None:
    result = split_text("я" * n)
    assert result.encoding == "ucs2"
    assert _lens(result) == lens


def test_ucs2_surrogate_pair_never_split() -> None:
    assert split_text("я" * 68 + "😀").parts == ["я" * 68 + "😀"]  # 70 units
    # emoji would take units 67-68: the part stops at 66
    result = split_text("я" * 66 + "😀" + "я" * 5)
    assert result.parts == ["я" * 66, "😀" + "я" * 5]
    assert _lens(result) == [66, 7]
    # emoji at units 66-67 fits exactly
    result = split_text("я" * 65 + "😀" + "я" * 5)
    assert result.parts == ["я" * 65 + "😀", "я" * 5]
    assert _lens(result) == [67, 5]
    # 35 emoji = 70 units: one part; 36 = 72: 33 + 3 emoji
    assert split_text("😀" * 35).parts == ["😀" * 35]
    assert split_text("😀" * 36).parts == ["😀" * 33, "😀" * 3]
    for part in split_text("😀" * 36).parts:
        assert decode_short_message(8, part.encode("utf-16-be")) == part


def test_one_non_gsm_char_makes_everything_ucs2() -> None:
    result = split_text("a" * 100 + "ç")
    assert result.encoding == "ucs2"
    assert _lens(result) == [67, 34]
    assert split_text("").encoding == "gsm7"
    assert part_count("") == 1


def _check_split(text: str) -> None:
    result = split_text(text)
    assert "".join(result.parts) == text
    assert result.parts
    gsm = is_gsm7(text)
    assert result.encoding == ("gsm7" if gsm else "ucs2")
    lens = _lens(result)
    single, multi = (160, 153) if gsm else (70, 67)
    if len(lens) == 1:
        assert lens[0] <= single
    else:
        assert sum(lens) > single
        assert all(0 < n <= multi for n in lens)
        # exact fill: every part but the last is too full to take the next character
        cost = gsm7_length if gsm else ucs2_length
        for part, nxt in zip(result.parts, result.parts[1:]):
            assert cost(part) + cost(nxt[0]) > multi
    assert part_count(text) == len(lens)


@given(gsm_text)
@settings(max_examples=300)
def test_split_gsm_properties(text: str) -> None:
    _check_split(text)


@given(any_text)
@settings(max_examples=300)
def test_split_any_properties(text: str) -> None:
    _check_split(text)


# --- safe text -------------------------------------------------------------------------------


def test_to_ascii_gsm_safe() -> None:
    assert to_ascii_gsm_safe("é@$_[x]\n~|\\`{}") == "e??-(x) -//'()"
    assert to_ascii_gsm_safe("Grüße @ 5$ [ok]\nПрив") == "Gru?e ? 5? (ok) ????"
    assert to_ascii_gsm_safe("ÄÖÜñ😀") == "AOUn?"
    assert to_ascii_gsm_safe("ok", replacement="_") == "ok"


@given(any_text)
def test_to_ascii_gsm_safe_is_safe(text: str) -> None:
    out = to_ascii_gsm_safe(text)
    assert len(out) == len(text)
    assert set(out) <= ASCII_GSM_SAFE
    assert out.encode("ascii") == out.encode("gsm03.38")


def test_split_for_16bit_reference_udh() -> None:
    assert [gsm7_length(p) for p in split_text("a" * 161, ref_bits=16).parts] == [152, 9]
    assert [gsm7_length(p) for p in split_text("a" * 160, ref_bits=16).parts] == [160]
    assert [ucs2_length(p) for p in split_text("я" * 71, ref_bits=16).parts] == [66, 5]
    assert split_text("я" * 65 + "😀", ref_bits=16).parts == ["я" * 65 + "😀"]  # 67 <= 70
    assert split_text("я" * 65 + "😀" + "я" * 4, ref_bits=16).parts == ["я" * 65, "😀" + "я" * 4]
    assert part_count("a" * 305, ref_bits=16) == 3
    assert part_count("a" * 305) == 2
    with pytest.raises(ValueError):
        split_text("x", ref_bits=12)
