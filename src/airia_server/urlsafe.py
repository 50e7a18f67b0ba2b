"""Unpadded base64url, for tokens that travel in URLs (tickets, signatures, cursors)."""

from __future__ import annotations

import base64
import binascii

_URLSAFE = bytes.maketrans(b"+/", b"-_")


def encode(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


def decode(text: str) -> bytes:
    """Raises ValueError (binascii.Error) when `text` is not base64url."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
