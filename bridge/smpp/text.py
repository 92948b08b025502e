"""Message text: SMPP data_coding <-> str, GSM 03.38 septets, and splitting into SMS parts.

Pure functions, no I/O. The GSM 03.38 tables come from the ``gsm0338`` package (the codec
``"gsm03.38"``); this module wraps it and fixes the places where it is not what an SMSC needs
(see "gsm0338 quirks" below).

Decoding rules (``decode_short_message``)
-----------------------------------------
data_coding values 0x00-0x0F are SMPP's own table (§5.2.19); 0x10-0xFF are read as a GSM
TS 23.038 §4 Data Coding Scheme.

* 0x00 SMSC default: GSM 03.38, *unpacked*, one septet per octet, ESC (0x1B) introduces the
  extension table (``{ } [ ] ~ \\ ^ | €`` and form feed).
* 0x01 IA5: see "data_coding 1" below.
* 0x02, 0x04 (8-bit binary): ``None``; the caller keeps the bytes.
* 0x03 Latin-1, 0x06 ISO-8859-5, 0x07 ISO-8859-8, 0x0A ISO-2022-JP, 0x0E KS C 5601 (EUC-KR).
* 0x08 UCS2: decoded as UTF-16BE so that surrogate pairs (emoji) come out as one character.
  A lone surrogate, or a dangling odd last octet, becomes U+FFFD (REPLACEMENT CHARACTER);
  decoding never raises.
* GSM DCS groups: general data coding 00xx xxxx and automatic deletion 01xx xxxx (bits 3-2:
  00 GSM 7-bit, 01 8-bit data, 10 UCS2, 11 reserved -> GSM 7-bit per TS 23.038 §4; bit 5 set =
  compressed text, which we cannot decompress -> ``None`` like binary); MWI groups 0xC0-0xDF
  (GSM 7-bit) and 0xE0-0xEF (UCS2); data coding / message class group 0xF0-0xFF (bit 2:
  0 GSM 7-bit, 1 8-bit data -> ``None``).
* Anything else (SMPP 0x05 JIS, 0x09 pictogram, 0x0D extended Kanji, reserved 0x0B/0x0C/0x0F,
  reserved groups 0x80-0xBF): Latin-1, which maps every octet to a character and never fails.

Whatever the alphabet, "GSM 7-bit" payloads that contain an octet >= 0x80 cannot be unpacked
septets; such a client obviously sent 8-bit text. We then decode as UTF-8 when the octets are
valid UTF-8, else as Latin-1 (``_eight_bit_fallback``).

data_coding 1 (IA5/ASCII)
-------------------------
npm ``smpp`` (node-smpp) sends every GSM-representable text as data_coding 1 *with GSM 03.38
bytes* ('@' = 0x00, '£' = 0x01, '€' = 1B 65). A genuine IA5 sender sends ASCII. The two agree on
letters, digits, space, CR, LF and most punctuation; they differ on ``$ @ [ \\ ] ^ _ ` { | } ~``
(ASCII) versus ``¤ ¡ Ä Ö Ñ Ü § ¿ ä ö ñ ü`` (GSM at the same octets) and on every octet below
0x20 and 0x7F. "Always GSM" would turn a real ASCII sender's e-mail address into
``john¡example.com`` and ``$5`` into ``¤5``; "always ASCII" would turn node-smpp's ``@`` into a
NUL. The rule (``ia5="auto"``, the default):

    an octet in 0x00-0x1F other than LF/CR, or 0x7F  ->  GSM 03.38 (an ASCII text never has
                                                         such control characters; node-smpp
                                                         emits them for @ £ $ ¥ è é ù ì ò Ç Ø ø
                                                         Å å Δ _ Φ Γ Λ Ω Π Ψ Σ Θ Ξ Æ æ ß É à,
                                                         ESC for every extension character)
    otherwise                                         ->  ASCII

What this still gets wrong: a node-smpp text whose only non-ASCII-compatible characters are
``Ä Ö Ñ Ü § ¿ ä ö ñ ü ¡ ¤`` (e.g. "Schön") reads as ASCII ("Sch|n"); an ASCII text with a TAB
reads as GSM (TAB is 'Ç'). Callers that know their peer can force ``ia5="gsm"`` or
``ia5="ascii"`` (e.g. from per-ESME configuration).

gsm0338 quirks (package version 1.1.0) and what we do about them
-----------------------------------------------------------------
* ESC followed by a code that is not in the extension table raises (``errors="strict"``) or
  gives a single U+FFFD for both octets (``"replace"``). TS 23.038 §6.2.1.1 says a receiver shows
  the basic-table character instead; our error handler does that. ESC ESC (reserved for a
  further extension table) is shown as a space, as TS 23.038 says.
* A lone ESC as the last octet is dropped silently. We keep that (nothing to display).
* The encoder maps U+001B (the ESC control character) to a bare 0x1B octet, so "\\x1be" encodes
  to 1B 65 which decodes as "€": not a faithful encoding. We treat U+001B as not
  GSM-encodable (``is_gsm7`` is False, such text goes out as UCS2).
* Its incremental encoder/decoder are broken (AttributeError): never use ``codecs.iterdecode``
  or a TextIOWrapper with "gsm03.38". We only call ``str.encode``/``bytes.decode``.

Splitting (``split_text``)
--------------------------
GSM 7-bit when every character is GSM-encodable: one part up to 160 septets, else parts of at
most 153 septets (an extension character costs 2 and is never split from its ESC). Otherwise
UCS2: one part up to 70 UTF-16 code units, else parts of at most 67 units, never splitting a
surrogate pair. (152 septets / 66 units with ``ref_bits=16``, whose UDH is one octet longer.)
Parts are filled to the limit, exactly and predictably: no word-boundary heuristics, so part
counts match what every SMSC and handset computes. Empty text is one empty part. The one
exception is ``avoid_start``: for parts sent as separate plain SMS to a device that refuses a
text starting with certain characters (GoIP firmware answers HTTP 500 to a text starting with
``[``; see docs/devices/goip.md), a boundary moves back so that no part starts with one.
"""

from __future__ import annotations

import codecs
import unicodedata
from typing import Literal

import attrs
import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

GSM_CODEC = "gsm03.38"
ESC = 0x1B

# Per-part limits (3GPP TS 23.040 9.2.3.24.1 with a 6-octet concatenation UDH).
GSM7_SINGLE = 160
GSM7_MULTI = 153
UCS2_SINGLE = 70
UCS2_MULTI = 67
GSM7_MULTI_REF16 = 152
UCS2_MULTI_REF16 = 66
BINARY_SINGLE = 140
BINARY_MULTI = 134
# The concatenation IE counts parts in one octet.
MAX_PARTS = 255

IA5Mode = Literal["auto", "gsm", "ascii"]


# --- GSM 03.38 tables, taken from the codec through its public API -------------------------


def _build_tables() -> tuple[dict[int, str], dict[str, int]]:
    basic: dict[int, str] = {}
    cost: dict[str, int] = {}
    for code in range(128):
        if code == ESC:
            continue
        ch = bytes([code]).decode(GSM_CODEC)
        basic[code] = ch
        cost[ch] = 1
    for code in range(128):
        try:
            ch = bytes([ESC, code]).decode(GSM_CODEC)
        except UnicodeDecodeError:
            continue
        cost.setdefault(ch, 2)
    return basic, cost


_BASIC, _GSM_COST = _build_tables()
# Characters that cost two septets (ESC + code).
GSM7_EXTENSION_CHARS = frozenset(ch for ch, n in _GSM_COST.items() if n == 2)
GSM7_BASIC_CHARS = frozenset(ch for ch, n in _GSM_COST.items() if n == 1)


def _gsm_decode_error(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    seq = exc.object[exc.start : exc.end]
    if len(seq) == 2 and seq[0] == ESC:
        code = seq[1]
        if code == ESC:
            return " ", exc.end
        if code in _BASIC:
            return _BASIC[code], exc.end
    return "\ufffd", exc.end


_ERRORS = "bridge-gsm0338"
codecs.register_error(_ERRORS, _gsm_decode_error)


# --- classification of data_coding ---------------------------------------------------------

# alphabet() results
GSM7 = "gsm7"
IA5 = "ia5"
BINARY = "binary"
COMPRESSED = "compressed"
UCS2 = "ucs2"
LATIN1 = "latin_1"

_SMPP_TABLE: dict[int, str] = {
    0x00: GSM7,
    0x01: IA5,
    0x02: BINARY,
    0x03: LATIN1,
    0x04: BINARY,
    0x06: "iso8859_5",
    0x07: "iso8859_8",
    0x08: UCS2,
    0x0A: "iso2022_jp",
    0x0E: "euc_kr",
}


def alphabet(data_coding: int) -> str:
    """What a data_coding value means for the payload.

    One of ``"gsm7"``, ``"ia5"``, ``"binary"``, ``"compressed"``, ``"ucs2"``, or a Python codec
    name (``"latin_1"``, ``"iso8859_5"``, ``"iso8859_8"``, ``"iso2022_jp"``, ``"euc_kr"``).
    Unknown and reserved values give ``"latin_1"`` (see the module docstring).
    """
    dc = data_coding & 0xFF
    if dc <= 0x0F:
        return _SMPP_TABLE.get(dc, LATIN1)
    group = dc >> 4
    if group <= 0x7:  # 00xx xxxx general, 01xx xxxx automatic deletion
        if dc & 0x20:
            return COMPRESSED
        return {0: GSM7, 1: BINARY, 2: UCS2, 3: GSM7}[(dc >> 2) & 0x3]
    if group in (0xC, 0xD):
        return GSM7
    if group == 0xE:
        return UCS2
    if group == 0xF:
        return BINARY if dc & 0x04 else GSM7
    return LATIN1  # 0x80-0xBF: reserved coding groups


def message_class(data_coding: int) -> int | None:
    """GSM message class 0-3 carried by a data_coding value, else None. Class 0 = flash SMS."""
    dc = data_coding & 0xFF
    if 0x10 <= dc <= 0x7F and dc & 0x10:
        return dc & 0x03
    if dc >= 0xF0:
        return dc & 0x03
    return None


def is_flash(data_coding: int) -> bool:
    return message_class(data_coding) == 0


# --- decoding ------------------------------------------------------------------------------


def _eight_bit_fallback(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.decode("latin_1")


# The basic table as a str.translate map over code points 0-127: decoding a payload without
# escapes is then two C-level calls (the hot path of every submit), not a Python codec loop.
_BASIC_TABLE = {b: bytes([b]).decode(GSM_CODEC, _ERRORS) for b in range(128) if b != 0x1B}


def gsm7_decode(payload: bytes) -> str:
    """Unpacked GSM 03.38 (one septet per octet) -> str. Never raises.

    Octets >= 0x80 cannot be septets: the whole payload is then read as 8-bit text (UTF-8 if
    valid, else Latin-1).
    """
    payload = bytes(payload)
    if not payload.isascii():
        return _eight_bit_fallback(payload)
    if 0x1B not in payload:
        return payload.decode("ascii").translate(_BASIC_TABLE)
    return payload.decode(GSM_CODEC, _ERRORS)


def _looks_like_gsm(payload: bytes) -> bool:
    return any((b < 0x20 and b not in (0x0A, 0x0D)) or b == 0x7F for b in payload)


def decode_short_message(
    data_coding: int, payload: bytes, *, ia5: IA5Mode = "auto"
) -> str | None:
    """Decode a short_message / message_payload body (without UDH) to text.

    Returns None for binary (8-bit data) and compressed codings: the caller keeps the bytes.
    Never raises for any data_coding or payload. See the module docstring for the rules.
    """
    payload = bytes(payload)
    alpha = alphabet(data_coding)
    if alpha == GSM7:
        return gsm7_decode(payload)
    if alpha == IA5:
        if not payload.isascii():
            return _eight_bit_fallback(payload)
        if ia5 == "gsm" or (ia5 == "auto" and _looks_like_gsm(payload)):
            return gsm7_decode(payload)
        return payload.decode("ascii")
    if alpha in (BINARY, COMPRESSED):
        return None
    if alpha == UCS2:
        return payload.decode("utf-16-be", "replace")
    return payload.decode(alpha, "replace")


# --- encoding ------------------------------------------------------------------------------


def is_gsm7(text: str) -> bool:
    """True when every character is in the GSM 03.38 default alphabet or its extension table."""
    cost = _GSM_COST
    return all(ch in cost for ch in text)


def gsm7_length(text: str) -> int:
    """Septets needed for ``text``; extension characters count 2. ValueError if not GSM."""
    try:
        return sum(_GSM_COST[ch] for ch in text)
    except KeyError as exc:
        raise ValueError(f"character {exc.args[0]!r} is not in the GSM 03.38 alphabet") from None


def gsm7_encode(text: str) -> bytes:
    """str -> unpacked GSM 03.38 septets (one per octet, ESC before extension characters)."""
    if not is_gsm7(text):
        bad = next(ch for ch in text if ch not in _GSM_COST)
        raise ValueError(f"character {bad!r} is not in the GSM 03.38 alphabet")
    return text.encode(GSM_CODEC)


def ucs2_length(text: str) -> int:
    """UTF-16 code units needed for ``text`` (characters outside the BMP count 2)."""
    return sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)


def ucs2_encode(text: str) -> bytes:
    """str -> UTF-16BE. Lone surrogates in ``text`` are written as-is (valid UCS2 octets)."""
    return text.encode("utf-16-be", "surrogatepass")


def encode_for_esme(text: str) -> tuple[int, bytes]:
    """(data_coding, short_message octets) for text we deliver to an ESME.

    (0, unpacked GSM 03.38) when every character is GSM-encodable, else (8, UTF-16BE).
    """
    if is_gsm7(text):
        return 0, text.encode(GSM_CODEC)
    return 8, ucs2_encode(text)


# --- septet packing (TS 23.038 §6.1.2.1) -----------------------------------------------------


def gsm7_pack(septets: bytes, fill_bits: int = 0) -> bytes:
    """Pack septets LSB first into octets, after ``fill_bits`` (0-6) zero bits.

    Fill bits go after a UDH so that the text starts on a septet boundary (TS 23.040
    9.2.3.24). The result has ceil((fill_bits + 7 * n) / 8) octets (none when there are no
    septets). ValueError for a septet > 0x7F or fill_bits out of range.
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError(f"fill_bits must be 0-6, not {fill_bits}")
    septets = bytes(septets)
    if not septets:
        return b""
    if any(s > 0x7F for s in septets):
        raise ValueError("a septet must be 0x00-0x7F")
    acc = 0
    for i, s in enumerate(septets):
        acc |= s << (fill_bits + 7 * i)
    nbits = fill_bits + 7 * len(septets)
    return acc.to_bytes((nbits + 7) // 8, "little")


def gsm7_unpack(data: bytes, septet_count: int, fill_bits: int = 0) -> bytes:
    """Inverse of :func:`gsm7_pack`: ``septet_count`` septets from ``data`` after ``fill_bits``.

    ValueError when ``data`` is too short for that many septets.
    """
    if not 0 <= fill_bits <= 6:
        raise ValueError(f"fill_bits must be 0-6, not {fill_bits}")
    if septet_count < 0:
        raise ValueError("septet_count must be >= 0")
    if septet_count == 0:
        return b""
    data = bytes(data)
    if fill_bits + 7 * septet_count > 8 * len(data):
        raise ValueError(
            f"{len(data)} octets hold fewer than {septet_count} septets after {fill_bits} fill bits"
        )
    acc = int.from_bytes(data, "little") >> fill_bits
    out = bytearray(septet_count)
    for i in range(septet_count):
        out[i] = acc & 0x7F
        acc >>= 7
    return bytes(out)


def udh_fill_bits(udh_length: int) -> int:
    """Fill bits after a UDH of ``udh_length`` octets (UDHL octet included) in 7-bit user data."""
    return (7 - (udh_length * 8) % 7) % 7


def gsm7_user_data(septets: bytes, udh: bytes = b"") -> tuple[int, bytes]:
    """Build 7-bit TP-User-Data: (TP-UDL in septets, UDH + packed septets with fill bits).

    ``udh`` is the whole header including its UDHL octet (e.g. from
    ``concat.build_concat_udh``), or empty.
    """
    fill = udh_fill_bits(len(udh)) if udh else 0
    udh_septets = (len(udh) * 8 + fill) // 7
    return udh_septets + len(septets), bytes(udh) + gsm7_pack(septets, fill)


def gsm7_split_user_data(user_data: bytes, udl: int, udhi: bool) -> tuple[bytes, bytes]:
    """Inverse of :func:`gsm7_user_data`: (UDH incl. UDHL octet or b"", unpacked septets)."""
    user_data = bytes(user_data)
    if not udhi:
        return b"", gsm7_unpack(user_data, udl)
    if not user_data:
        raise ValueError("UDHI set but user data is empty")
    udh_len = user_data[0] + 1
    if udh_len > len(user_data):
        raise ValueError("UDH length exceeds user data")
    fill = udh_fill_bits(udh_len)
    udh_septets = (udh_len * 8 + fill) // 7
    if udl < udh_septets:
        raise ValueError("TP-UDL is shorter than the UDH")
    return user_data[:udh_len], gsm7_unpack(user_data[udh_len:], udl - udh_septets, fill)


# --- splitting -----------------------------------------------------------------------------


@attrs.frozen
class SplitResult:
    encoding: Literal["gsm7", "ucs2"]
    parts: list[str]

    @property
    def count(self) -> int:
        return len(self.parts)


def _fill(text: str, costs: list[int], limit: int, avoid_start: frozenset[str] = frozenset()) -> list[str]:
    parts: list[str] = []
    start = 0
    used = 0
    for i, c in enumerate(costs):
        if used + c > limit:
            cut = i
            if text[i] in avoid_start:
                # Move the boundary back to the last character the next part may start with;
                # the current part only gets shorter, so it still fits.
                cut = next((j for j in range(i - 1, start, -1) if text[j] not in avoid_start), i)
            parts.append(text[start:cut])
            start, used = cut, sum(costs[cut:i])
        used += c
    parts.append(text[start:])
    return parts


def _multi_limits(ref_bits: int) -> tuple[int, int]:
    if ref_bits == 8:
        return GSM7_MULTI, UCS2_MULTI
    if ref_bits == 16:  # a 7-octet UDH: 8 septets of 160, 7 octets of 140
        return GSM7_MULTI_REF16, UCS2_MULTI_REF16
    raise ValueError("ref_bits must be 8 or 16")


def split_text(text: str, *, ref_bits: int = 8, avoid_start: frozenset[str] = frozenset()) -> SplitResult:
    """Split text into SMS parts (see the module docstring for the rules).

    ``ref_bits`` is the concatenation reference the parts will carry if they go out with a
    UDH: 8 (the usual 6-octet UDH: 153 septets / 67 UCS2 units per part) or 16 (7-octet UDH:
    152 / 66). Parts sent as separate plain SMS (GoIP) use the default.

    ``avoid_start``: characters a part other than the first must not start with (a device that
    refuses a text starting with them, e.g. a GoIP and ``[``: the driver's
    ``part_start_refused``). A boundary that would fall before one moves back to the last
    character that is not one, making that part shorter (possibly adding a part). When every
    character since the previous boundary is refused the boundary stays (nothing better
    exists). The first part is the text's own start and is never changed.
    """
    gsm_multi, ucs2_multi = _multi_limits(ref_bits)
    if is_gsm7(text):
        costs = [_GSM_COST[ch] for ch in text]
        if sum(costs) <= GSM7_SINGLE:
            return SplitResult("gsm7", [text])
        return SplitResult("gsm7", _fill(text, costs, gsm_multi, avoid_start))
    costs = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    if sum(costs) <= UCS2_SINGLE:
        return SplitResult("ucs2", [text])
    return SplitResult("ucs2", _fill(text, costs, ucs2_multi, avoid_start))


def part_count(text: str, *, ref_bits: int = 8) -> int:
    """Number of SMS parts ``text`` needs (at least 1): exactly ``len(split_text(text).parts)``,
    the parts the scheduler sends, so throughput limits count what goes on the air."""
    if len(text) <= 35:  # 35 characters of at most 2 septets / 2 UTF-16 units always fit one SMS
        return 1
    # The common case, one SMS, without building the parts (C-level set and codec calls: this
    # runs for every submit).
    if _GSM_SET.issuperset(text):
        if len(text.translate(_EXT_DOUBLE)) <= GSM7_SINGLE:
            return 1
    elif len(text.encode("utf-16-le", "surrogatepass")) <= 2 * UCS2_SINGLE:
        return 1
    return len(split_text(text, ref_bits=ref_bits).parts)


_GSM_SET = frozenset(_GSM_COST)
_EXT_DOUBLE = {ord(ch): ch * 2 for ch in GSM7_EXTENSION_CHARS}


# --- helpers for receipts and logs ---------------------------------------------------------

# Printable characters with the same octet in ASCII and in GSM 03.38: safe in a data_coding 0
# text whether the reader decodes it as ASCII or as GSM.
ASCII_GSM_SAFE = frozenset(
    " !\"#%&'()*+,-./0123456789:;<=>?"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
_LOOKALIKE = {"[": "(", "]": ")", "{": "(", "}": ")", "`": "'", "_": "-", "~": "-",
              "|": "/", "\\": "/"}  # fmt: skip


def to_ascii_gsm_safe(text: str, replacement: str = "?") -> str:
    """Map each character to one character from ``ASCII_GSM_SAFE``.

    Whitespace -> space; accented letters -> their base letter (é -> e, Ä -> A); brackets,
    backquote, underscore, tilde, bar and backslash -> look-alikes; anything else
    (@, $, ß, Cyrillic, emoji...) -> ``replacement``. Length is preserved.
    """
    out = []
    for ch in text:
        if ch in ASCII_GSM_SAFE:
            out.append(ch)
        elif ch.isspace():
            out.append(" ")
        elif ch in _LOOKALIKE:
            out.append(_LOOKALIKE[ch])
        else:
            base = unicodedata.normalize("NFKD", ch)[:1]
            out.append(base if base in ASCII_GSM_SAFE and base != ch else replacement)
    return "".join(out)
