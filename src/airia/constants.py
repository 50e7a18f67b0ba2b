"""Defaults, under the names the official `airia` package gives them.

The base URL is this server's default (`AIRIA_BASE_URL` overrides it per process,
`base_url=` per client). The gateway URLs are the Airia platform's; this SDK has
no gateway clients, and only names them for code that reads them.
"""

from __future__ import annotations

from ._constants import DEFAULT_BASE_URL, DEFAULT_TIMEOUT

DEFAULT_OPENAI_GATEWAY_URL = "https://gateway.airia.ai/openai/v1"
DEFAULT_ANTHROPIC_GATEWAY_URL = "https://gateway.airia.ai/anthropic"

__all__ = [
    "DEFAULT_ANTHROPIC_GATEWAY_URL",
    "DEFAULT_BASE_URL",
    "DEFAULT_OPENAI_GATEWAY_URL",
    "DEFAULT_TIMEOUT",
]
