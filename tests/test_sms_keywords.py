"""Inbound keywords: whole-message matching, a table of cases, and hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tasks.sms.keywords import (
    BUILT_IN_HELP_KEYWORDS,
    BUILT_IN_OPT_IN_KEYWORDS,
    BUILT_IN_OPT_OUT_KEYWORDS,
    InboundKeyword,
    classify_inbound,
    normalize_keyword,
)
from tests.properties import property_settings

OUT, IN, HELP = InboundKeyword.OPT_OUT, InboundKeyword.OPT_IN, InboundKeyword.HELP
TENANT_OUT = ("ARRET", "OPT OUT", "Désabonner")
TENANT_IN = ("REPRENDRE",)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # The built-in opt-outs, in the shapes people type them.
        ("STOP", OUT),
        ("stop", OUT),
        ("Stop.", OUT),
        (" stop ", OUT),
        ("STOP!!!", OUT),
        ("\tStop\n", OUT),
        ('"stop"', OUT),
        ("«stop»", OUT),
        ("¡Stop!", OUT),
        ("...stop...", OUT),
        ("\uff33\uff34\uff2f\uff30", OUT),  # full-width STOP (NFKC)
        ("stop\u200b", OUT),  # a zero-width space pasted after it
        ("S\u200bTOP", OUT),
        ("\u00a0STOP\u3000", OUT),  # no-break and ideographic spaces
        ("StopAll", OUT),
        ("unsubscribe", OUT),
        ("Cancel", OUT),
        ("END", OUT),
        ("quit.", OUT),
        ("revoke", OUT),
        ("OptOut", OUT),
        # Tenant opt-outs: accents, case and internal spaces do not matter.
        ("ARRET", OUT),
        ("arrêt", OUT),
        ("Arrêt !", OUT),
        ("ARRÊT", OUT),
        ("opt   out", OUT),
        ("desabonner", OUT),
        ("DÉSABONNER.", OUT),
        # Opt-ins and help.
        ("START", IN),
        ("Unstop", IN),
        ("yes", IN),
        ("Yes!", IN),
        ("reprendre", IN),
        ("HELP", HELP),
        ("help?", HELP),
        (" Help. ", HELP),
        # Not keywords: a keyword inside longer text, or nothing at all.
        ("Don't stop", None),
        ("don't STOP", None),
        ("unstoppable", None),
        ("We have got to STOP this bill", None),
        ("stop it", None),
        ("Please stop", None),
        ("STOPP", None),
        ("STOP ALL", None),  # STOPALL is one word; a tenant may add "STOP ALL"
        ("opt-out", None),  # "OPT OUT" has a space, not a hyphen
        ("stop 🛑", None),  # an emoji is content, not punctuation
        ("yes please", None),
        ("Yesterday", None),
        ("helpful", None),
        ("I need help", None),
        ("arrêter", None),
        ("start over", None),
        ("", None),
        ("   ", None),
        ("?!.", None),
        ("Hello", None),
        ("S T O P", None),
        ("5T0P", None),
    ],
)
def test_classification_table(body: str, expected: InboundKeyword | None) -> None:
    assert classify_inbound(body, TENANT_OUT, TENANT_IN) is expected


def test_tenant_keywords_only_apply_when_given() -> None:
    assert classify_inbound("ARRET") is None
    assert classify_inbound("ARRET", opt_out_keywords=["arrêt"]) is OUT
    assert classify_inbound("reprendre") is None


def test_opt_out_wins_over_a_tenant_opt_in_of_the_same_word() -> None:
    # A tenant cannot turn STOP into an opt-in, nor make one of its keywords both.
    assert classify_inbound("stop", opt_in_keywords=["STOP"]) is OUT
    assert classify_inbound("bye", opt_out_keywords=["bye"], opt_in_keywords=["BYE"]) is OUT
    assert classify_inbound("help", opt_out_keywords=["help"]) is OUT


def test_accents_fold_on_latin_letters_only() -> None:
    assert normalize_keyword("Ārrêt") == "arret"
    # In Devanagari a vowel sign is part of the word: "रोकें" stays itself.
    assert classify_inbound("रोकें", opt_out_keywords=["रोकें"]) is OUT
    assert classify_inbound("रक", opt_out_keywords=["रोकें"]) is None


def test_not_a_string_is_none() -> None:
    assert classify_inbound(None) is None  # type: ignore[arg-type]
    assert classify_inbound(42) is None  # type: ignore[arg-type]


ALL_KEYWORDS = (
    BUILT_IN_OPT_OUT_KEYWORDS
    + BUILT_IN_OPT_IN_KEYWORDS
    + BUILT_IN_HELP_KEYWORDS
    + TENANT_OUT
    + TENANT_IN
)
ALL_NORMALIZED = {normalize_keyword(k) for k in ALL_KEYWORDS}

# Whitespace, punctuation and separators: what the matcher trims from both ends.
SURROUNDING = st.text(
    alphabet=st.one_of(
        st.sampled_from(list(" \t\n\r.,!?;:'\"()[]-…«»¡¿")),
        st.characters(categories=["P", "Z"]),
    ),
    max_size=6,
)


def keyword_variants() -> st.SearchStrategy[str]:
    """A keyword in random case, sometimes full-width."""

    def vary(keyword: str, upper: list[bool], wide: bool) -> str:
        letters = [c.upper() if u else c.lower() for c, u in zip(keyword, upper, strict=False)]
        text = "".join(letters) + keyword[len(letters) :]
        if wide:
            text = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
        return text

    return st.builds(
        vary, st.sampled_from(ALL_KEYWORDS), st.lists(st.booleans(), max_size=12), st.booleans()
    )


# Text around a keyword that has a letter or digit in it: the message is then more than it.
WORDS = st.one_of(
    st.sampled_from(["don't", "un", "able", "please", "ping", "ALL", "ful", "now", "1", "x"]),
    st.text(min_size=1, max_size=8).filter(lambda t: any(c.isalnum() for c in t)),
)


@property_settings(600)
@given(
    keyword_variants(),
    st.one_of(st.just(""), WORDS),
    st.one_of(st.just(""), WORDS),
    st.sampled_from(["", " ", "-", "'"]),
)
def test_a_keyword_inside_longer_text_never_matches(
    keyword: str, before: str, after: str, glue: str
) -> None:
    assume(before or after)
    message = (before + glue if before else "") + keyword + (glue + after if after else "")
    # Only when the extra text added nothing but what is trimmed, or happened to spell another
    # whole keyword ("UN" + "STOP" is UNSTOP), may it match.
    assume(normalize_keyword(message) != normalize_keyword(keyword))
    assume(normalize_keyword(message) not in ALL_NORMALIZED)
    assert classify_inbound(message, TENANT_OUT, TENANT_IN) is None


@property_settings(600)
@given(
    st.one_of(keyword_variants(), st.text(max_size=20)),
    SURROUNDING,
    SURROUNDING,
)
def test_surrounding_whitespace_and_punctuation_never_change_the_verdict(
    body: str, before: str, after: str
) -> None:
    alone = classify_inbound(body, TENANT_OUT, TENANT_IN)
    assert classify_inbound(before + body + after, TENANT_OUT, TENANT_IN) is alone


@property_settings(300)
@given(keyword_variants(), SURROUNDING, SURROUNDING)
def test_every_keyword_matches_in_any_case_and_width(keyword: str, before: str, after: str) -> None:
    assert classify_inbound(before + keyword + after, TENANT_OUT, TENANT_IN) is not None
