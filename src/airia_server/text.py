"""Checks on text: what must hold for ASCII alone, whatever else Unicode allows, and
what shows nothing."""

from __future__ import annotations

# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): characters a
# renderer shows as nothing, whatever their category (format characters, variation
# selectors, the combining grapheme joiner, invisible Khmer vowels, fillers), and the
# Braille blank, a letter drawn empty. A format character that draws a glyph (ARABIC
# END OF AYAH, U+06DD) is not among them.
_INVISIBLE_RANGES = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x2800, 0x2800),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)


def _invisible(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _INVISIBLE_RANGES)


def is_blank(text: str) -> bool:
    """Whether `text` shows nothing: empty, or only spaces and characters drawn as
    nothing (a zero-width space, a byte order mark, a soft hyphen, a variation
    selector alone, a filler)."""
    return all(c.isspace() or _invisible(c) for c in text)


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
