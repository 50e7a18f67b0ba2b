"""The clients, at the import path the official package uses."""

from ._client import AiriaAsyncClient, AiriaClient

__all__ = ["AiriaAsyncClient", "AiriaClient"]
