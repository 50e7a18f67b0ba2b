"""Checks on text that must hold for ASCII alone, whatever else Unicode allows."""

from __future__ import annotations


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
