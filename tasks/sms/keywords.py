"""Inbound keywords: is an inbound SMS an opt-out, an opt-in, a request for help, or none.

The whole message must be the keyword: after trimming whitespace and punctuation at both ends,
the rest is compared, ignoring case, width and compatibility forms (NFKC, casefold) and accents
on Latin letters, with the keyword. "Stop." and " stop " opt out; "Don't stop", "unstoppable"
and "We have got to STOP this bill" do not (a substring match is the false positive peers have).
Internal whitespace counts as one space, so a tenant keyword may have two words ("OPT OUT").

When one text is in two lists (a tenant's opt-in keyword that is also an opt-out keyword),
opt-out wins: an opt-out must always be honoured, and HELP never hides one.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from enum import StrEnum

BUILT_IN_OPT_OUT_KEYWORDS = (
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
)
BUILT_IN_OPT_IN_KEYWORDS = ("START", "UNSTOP", "YES")
BUILT_IN_HELP_KEYWORDS = ("HELP",)


class InboundKeyword(StrEnum):
    OPT_OUT = "OPT_OUT"
    OPT_IN = "OPT_IN"
    HELP = "HELP"


def _is_trimmed(character: str) -> bool:
    """Whitespace, punctuation, separators and control characters."""
    category = unicodedata.category(character)
    return character.isspace() or category[0] in "PZ" or category == "Cc"


def _is_mark(character: str) -> bool:
    return unicodedata.category(character)[0] == "M"


def _fold_latin_accents(text: str) -> str:
    """Drop combining marks that sit on Latin letters ("ARRÊT" -> "ARRET").

    Only on Latin letters: in Devanagari or Thai a mark is part of the letter, and removing
    it would make different words equal.
    """
    decomposed = unicodedata.normalize("NFD", text)
    kept: list[str] = []
    base_is_latin = False
    for character in decomposed:
        if unicodedata.combining(character):
            if not base_is_latin:
                kept.append(character)
            continue
        base_is_latin = unicodedata.name(character, "").startswith("LATIN ")
        kept.append(character)
    return unicodedata.normalize("NFC", "".join(kept))


def normalize_keyword(text: str) -> str:
    """The form in which a message and a keyword are compared.

    NFKC (full-width and compatibility forms), invisible format characters removed, casefold,
    accents on Latin letters dropped, whitespace and punctuation trimmed from both ends, and
    each internal run of whitespace turned into one space. "  Arrêt !" -> "arret".
    """
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    text = _trim(_fold_latin_accents(text.casefold()))
    return " ".join(text.split())


def _trim(text: str) -> str:
    """Strip trimmed characters from both ends, with the combining marks that sit on them.

    NFKC turns some punctuation into a space plus a mark ("‗" is " " + U+0333), and a mark on
    a trimmed character, or one with nothing under it, is part of what is trimmed.
    """
    start, end = 0, len(text)
    while start < end and (_is_trimmed(text[start]) or _is_mark(text[start])):
        start += 1
    while end > start:
        base = end - 1
        while base >= start and _is_mark(text[base]):
            base -= 1
        if base >= start and not _is_trimmed(text[base]):
            break
        end = base
    return text[start:end]


def _normalized_set(keywords: Iterable[str]) -> set[str]:
    return {normalized for k in keywords if (normalized := normalize_keyword(k))}


_BUILT_IN_OPT_OUT = _normalized_set(BUILT_IN_OPT_OUT_KEYWORDS)
_BUILT_IN_OPT_IN = _normalized_set(BUILT_IN_OPT_IN_KEYWORDS)
_BUILT_IN_HELP = _normalized_set(BUILT_IN_HELP_KEYWORDS)


def classify_inbound(
    body: str,
    opt_out_keywords: Iterable[str] = (),
    opt_in_keywords: Iterable[str] = (),
) -> InboundKeyword | None:
    """OPT_OUT, OPT_IN or HELP when the whole body is such a keyword, else None.

    `opt_out_keywords` and `opt_in_keywords` are the tenant's additions
    (tenants.settings.opt_out_keywords, opt_in_keywords); the built-in lists always apply.
    A body that is not a string, or empty once trimmed, is None.
    """
    if not isinstance(body, str):
        return None
    text = normalize_keyword(body)
    if not text:
        return None
    if text in _BUILT_IN_OPT_OUT or text in _normalized_set(opt_out_keywords):
        return InboundKeyword.OPT_OUT
    if text in _BUILT_IN_OPT_IN or text in _normalized_set(opt_in_keywords):
        return InboundKeyword.OPT_IN
    if text in _BUILT_IN_HELP:
        return InboundKeyword.HELP
    return None
