"""SMS segments: a table of known strings, and an independent byte-level reference."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tasks.sms.segments import (
    GSM7_BASIC_CHARACTERS,
    GSM7_EXTENSION_CHARACTERS,
    SegmentCount,
    SmsEncoding,
    count_segments,
)
from tests.properties import property_settings

GSM, UCS = SmsEncoding.GSM_7, SmsEncoding.UCS_2
CYRILLIC = "ж"  # one UTF-16 unit, not in GSM-7
EMOJI = "😀"  # two UTF-16 units (a surrogate pair)
APOSTROPHE = "\u2019"  # the curly apostrophe phones type
QUOTES = "\u201c\u201d"


@pytest.mark.parametrize(
    ("body", "encoding", "segments", "units"),
    [
        pytest.param("", GSM, 1, 0, id="empty"),
        pytest.param("Hi", GSM, 1, 2, id="short"),
        pytest.param("a" * 153, GSM, 1, 153, id="gsm-153-single"),
        pytest.param("a" * 154, GSM, 1, 154, id="gsm-154-single"),
        pytest.param("a" * 160, GSM, 1, 160, id="gsm-160"),
        pytest.param("a" * 161, GSM, 2, 161, id="gsm-161"),
        pytest.param("a" * 306, GSM, 2, 306, id="gsm-306"),
        pytest.param("a" * 307, GSM, 3, 307, id="gsm-307"),
        pytest.param("a" * 459, GSM, 3, 459, id="gsm-459"),
        pytest.param("a" * 460, GSM, 4, 460, id="gsm-460"),
        pytest.param("€", GSM, 1, 2, id="euro-is-extension"),
        pytest.param("a" * 158 + "€", GSM, 1, 160, id="extension-fills-160"),
        pytest.param("a" * 159 + "€", GSM, 2, 161, id="extension-makes-161"),
        pytest.param("€" * 80, GSM, 1, 160, id="80-extension-chars"),
        pytest.param("€" * 81, GSM, 2, 162, id="81-extension-chars"),
        # The escape pair at septet 153 moves whole to part 2: 152 | 2 + 151 | 1.
        pytest.param("a" * 152 + "€" + "a" * 152, GSM, 3, 306, id="escape-pair-not-split"),
        pytest.param("a" * 151 + "€" + "a" * 153, GSM, 2, 306, id="escape-pair-fits-153"),
        pytest.param("a" * 152 + "{" + "a" * 10, GSM, 2, 164, id="brace-at-boundary"),
        pytest.param("^{}\\[~]|€\f", GSM, 1, 20, id="every-extension-char"),
        pytest.param("@£$¥èéùìòÇ\nØø\rÅå", GSM, 1, 16, id="basic-row-0"),
        pytest.param("ΔΦΓΛΩΠΨΣΘΞ", GSM, 1, 10, id="greek-capitals-in-gsm"),
        pytest.param("\u2126", UCS, 1, 1, id="ohm-sign-is-not-omega"),
        pytest.param("ç", UCS, 1, 1, id="small-c-cedilla-not-gsm"),
        pytest.param(QUOTES[0] + "Hello" + QUOTES[1], UCS, 1, 7, id="curly-double-quotes"),
        pytest.param("It" + APOSTROPHE + "s", UCS, 1, 4, id="curly-apostrophe"),
        pytest.param("a" * 159 + APOSTROPHE, UCS, 3, 160, id="one-curly-quote-makes-it-ucs2"),
        pytest.param(CYRILLIC * 70, UCS, 1, 70, id="ucs2-70"),
        pytest.param(CYRILLIC * 71, UCS, 2, 71, id="ucs2-71"),
        pytest.param(CYRILLIC * 134, UCS, 2, 134, id="ucs2-67x2"),
        pytest.param(CYRILLIC * 135, UCS, 3, 135, id="ucs2-67x2-plus-1"),
        pytest.param(EMOJI, UCS, 1, 2, id="emoji"),
        pytest.param(CYRILLIC * 68 + EMOJI, UCS, 1, 70, id="emoji-fills-70"),
        pytest.param(CYRILLIC * 69 + EMOJI, UCS, 2, 71, id="emoji-makes-71"),
        pytest.param(EMOJI * 35, UCS, 1, 70, id="35-emoji"),
        pytest.param(EMOJI * 36, UCS, 2, 72, id="36-emoji-33-per-part"),
        pytest.param(EMOJI * 67, UCS, 3, 134, id="67-emoji-not-2-segments"),
        # The surrogate pair at unit 67 moves whole to part 2: 66 | 2 + 65 | 1.
        pytest.param(CYRILLIC * 66 + EMOJI + CYRILLIC * 66, UCS, 3, 134, id="pair-not-split"),
        pytest.param(CYRILLIC * 65 + EMOJI + CYRILLIC * 67, UCS, 2, 134, id="pair-fits-67"),
        pytest.param("Hello мир", UCS, 1, 9, id="mixed-latin-cyrillic"),
        pytest.param("Olá 你好 مرحبا", UCS, 1, 12, id="mixed-scripts"),
        pytest.param("नमस्ते", UCS, 1, 6, id="devanagari"),
        pytest.param("€ and ж", UCS, 1, 7, id="euro-counts-1-in-ucs2"),
    ],
)
def test_known_strings(body: str, encoding: SmsEncoding, segments: int, units: int) -> None:
    assert count_segments(body) == SegmentCount(encoding, segments, units)


def test_the_alphabet_has_128_codes_less_escape_and_10_extensions() -> None:
    assert len(GSM7_BASIC_CHARACTERS) == 127
    assert len(GSM7_EXTENSION_CHARACTERS) == 10
    assert not GSM7_BASIC_CHARACTERS & GSM7_EXTENSION_CHARACTERS
    assert "\x1b" not in GSM7_BASIC_CHARACTERS


def test_encoding_spellings_are_the_contracts() -> None:
    assert [e.value for e in SmsEncoding] == ["GSM-7", "UCS-2"]


# An independent reference: encode to the bytes a provider sends and cut the stream as a
# concatenating encoder does, stepping back when a cut would separate an escape from its code
# or a high surrogate from its low one.
ESC = 0x1B


def _reference_segments(body: str) -> tuple[SmsEncoding, int, int]:
    if all(c in GSM7_BASIC_CHARACTERS or c in GSM7_EXTENSION_CHARACTERS for c in body):
        septets: list[int] = []
        for c in body:
            septets += [ESC, ord(c)] if c in GSM7_EXTENSION_CHARACTERS else [ord(c)]
        if len(septets) <= 160:
            return GSM, 1, len(septets)
        parts, position = 0, 0
        while position < len(septets):
            cut = min(position + 153, len(septets))
            # ESC is never a character's code (it is not in the alphabet), only a prefix.
            if cut < len(septets) and septets[cut - 1] == ESC:
                cut -= 1
            parts, position = parts + 1, cut
        return GSM, parts, len(septets)
    data = body.encode("utf-16-be")
    units = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if len(units) <= 70:
        return UCS, 1, len(units)
    parts, position = 0, 0
    while position < len(units):
        cut = min(position + 67, len(units))
        if cut < len(units) and 0xD800 <= units[cut - 1] <= 0xDBFF:
            cut -= 1
        parts, position = parts + 1, cut
    return UCS, parts, len(units)


GSM_TEXT = st.text(
    alphabet=st.sampled_from(sorted(GSM7_BASIC_CHARACTERS | GSM7_EXTENSION_CHARACTERS)),
    max_size=700,
)
ANY_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(sorted(GSM7_BASIC_CHARACTERS | GSM7_EXTENSION_CHARACTERS)),
        st.sampled_from([CYRILLIC, EMOJI, APOSTROPHE, "ç", "𝄞", "你"]),
        st.characters(codec="utf-8"),
    ),
    max_size=400,
)


# Few characters, many of them two units wide: the cuts land on pairs often.
WIDE_GSM_TEXT = st.text(alphabet=st.sampled_from(["a", "€", "{"]), min_size=150, max_size=700)
WIDE_UCS_TEXT = st.text(alphabet=st.sampled_from([CYRILLIC, EMOJI]), min_size=60, max_size=300)


@property_settings(400)
@given(st.one_of(GSM_TEXT, ANY_TEXT, WIDE_GSM_TEXT, WIDE_UCS_TEXT))
def test_matches_the_byte_level_reference(body: str) -> None:
    count = count_segments(body)
    assert (count.encoding, count.segments, count.units) == _reference_segments(body)


@property_settings(200)
@given(GSM_TEXT.filter(lambda body: len(body) > 0), st.sampled_from([CYRILLIC, EMOJI, APOSTROPHE]))
def test_one_non_gsm_character_switches_the_whole_body_to_ucs2(body: str, other: str) -> None:
    assert count_segments(body).encoding is GSM
    switched = count_segments(body + other)
    assert switched.encoding is UCS
    assert switched.units == len((body + other).encode("utf-16-be")) // 2
