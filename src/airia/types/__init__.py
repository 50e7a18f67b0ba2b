"""Response types returned by the SDK."""

from . import api as api

__all__ = ["api"]
