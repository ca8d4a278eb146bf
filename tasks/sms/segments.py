"""SMS segments of a body: the encoding a provider will use and how many messages it bills.

GSM-7 (3GPP TS 23.038, the GSM 03.38 default alphabet) when every character is in its basic
table or its extension table, else UCS-2. A body that fits one message is a single segment of
160 septets (GSM-7) or 70 UTF-16 code units (UCS-2); a longer one is sent concatenated, and each
part loses room to the user data header: 153 septets or 67 code units. Parts are filled in order
and a character is never cut: an extension character (escape + code, 2 septets) and a surrogate
pair (an emoji, 2 code units) move whole to the next part, so a boundary can leave a part one
unit short. That is why the count is a packing, not ceil(units / 153).

No national language shift tables and no "smart" replacement of curly quotes: a character
outside the default alphabet makes the whole body UCS-2, as providers bill it unless they are
told to transliterate.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# The basic table, in code order (0x00-0x7F), without 0x1B (ESC, the extension prefix).
GSM7_BASIC_CHARACTERS = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
# The extension table: each is sent as ESC + code, two septets. \f is the page break (0x0A).
GSM7_EXTENSION_CHARACTERS = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE_SEGMENT_SEPTETS = 160
GSM7_PART_SEPTETS = 153
UCS2_SINGLE_SEGMENT_UNITS = 70
UCS2_PART_UNITS = 67


class SmsEncoding(StrEnum):
    """messages.encoding, spelled as the upstream contract spells it."""

    GSM_7 = "GSM-7"
    UCS_2 = "UCS-2"


@dataclass(frozen=True)
class SegmentCount:
    """encoding; segments billed; units: septets (GSM-7) or UTF-16 code units (UCS-2)."""

    encoding: SmsEncoding
    segments: int
    units: int


def _gsm7_widths(body: str) -> list[int] | None:
    """Septets per character, or None when a character is outside GSM-7."""
    widths = []
    for character in body:
        if character in GSM7_BASIC_CHARACTERS:
            widths.append(1)
        elif character in GSM7_EXTENSION_CHARACTERS:
            widths.append(2)
        else:
            return None
    return widths


def _ucs2_widths(body: str) -> list[int]:
    """UTF-16 code units per character: 2 for a character beyond the BMP (a surrogate pair)."""
    return [2 if ord(character) > 0xFFFF else 1 for character in body]


def _pack(widths: list[int], single_limit: int, part_limit: int) -> int:
    """Segments needed: one if everything fits, else parts filled in order, nothing split."""
    if sum(widths) <= single_limit:
        return 1
    parts, used = 1, 0
    for width in widths:
        if used + width > part_limit:
            parts, used = parts + 1, 0
        used += width
    return parts


def count_segments(body: str) -> SegmentCount:
    """The encoding, segment count and unit count of an SMS body.

    An empty body is one (empty) GSM-7 segment of 0 septets: a message with no text is still
    one message on the wire (send_sms configs never have an empty body).
    """
    gsm_widths = _gsm7_widths(body)
    if gsm_widths is not None:
        segments = _pack(gsm_widths, GSM7_SINGLE_SEGMENT_SEPTETS, GSM7_PART_SEPTETS)
        return SegmentCount(SmsEncoding.GSM_7, segments, sum(gsm_widths))
    ucs_widths = _ucs2_widths(body)
    segments = _pack(ucs_widths, UCS2_SINGLE_SEGMENT_UNITS, UCS2_PART_UNITS)
    return SegmentCount(SmsEncoding.UCS_2, segments, sum(ucs_widths))
