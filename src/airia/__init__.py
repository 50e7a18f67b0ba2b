"""Python SDK for the Airia Conversations API.

```python
from airia import AiriaClient

client = AiriaClient(api_key="your_api_key")
conversation = client.conversations.create_conversation(user_id="user_123")
```
"""

import builtins as _builtins

from ._client import AiriaAsyncClient, AiriaClient
from ._exceptions import (
    AiriaAPIError,
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ExternalIdentityConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
    WebSocketClosedError,
)
from ._version import __version__
from .logs import (
    clear_correlation_id,
    configure_logging,
    get_correlation_id,
    set_correlation_id,
)

# The documentation's "Delete Conversation" example catches `AiriaAPIError` having
# imported only `AiriaClient`; as a builtin the name resolves there, so the example
# runs as written instead of raising NameError. A builtin of that name that is
# already there (a program's own) is left alone.
if not hasattr(_builtins, "AiriaAPIError"):
    _builtins.AiriaAPIError = AiriaAPIError

__all__ = [
    "APIConnectionError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AiriaAPIError",
    "AiriaAsyncClient",
    "AiriaClient",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "ExternalIdentityConflictError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "UnprocessableEntityError",
    "WebSocketClosedError",
    "__version__",
    "clear_correlation_id",
    "configure_logging",
    "get_correlation_id",
    "set_correlation_id",
]
