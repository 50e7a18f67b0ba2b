"""Checks on text: what must hold for ASCII alone, whatever else Unicode allows, and
what shows nothing."""

from __future__ import annotations

import unicodedata

# Letters and symbols that are drawn as nothing: the Hangul fillers, the Braille blank.
_BLANK_GLYPHS = frozenset("\u115f\u1160\u2800\u3164\uffa0")


def is_blank(text: str) -> bool:
    """Whether `text` shows nothing: empty, or only spaces, format characters (a
    zero-width space, a byte order mark, a soft hyphen) and blank glyphs."""
    return all(c.isspace() or c in _BLANK_GLYPHS or unicodedata.category(c) == "Cf" for c in text)


def is_ascii_digits(text: str) -> bool:
    """Whether `text` is one or more of the digits 0-9. `str.isdigit` alone also takes
    '²' (which `int` then refuses) and an Arabic-Indic one (which `int` reads as
    1)."""
    return text.isascii() and text.isdigit()


def parse_int(text: str) -> int | None:
    """`text` as an integer written in ASCII digits with an optional leading '-', or
    None. Stricter than `int`, which also reads '+1', '1_0', ' 1' and
    full-width digits."""
    digits = text[1:] if text.startswith("-") else text
    return int(text) if is_ascii_digits(digits) else None
