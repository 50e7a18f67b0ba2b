"""`airia.client.async_client`, as in the official package."""

from .._client import AiriaAsyncClient

__all__ = ["AiriaAsyncClient"]
