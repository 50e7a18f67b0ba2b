"""`airia.client.sync_client`, as in the official package."""

from .._client import AiriaClient

__all__ = ["AiriaClient"]
