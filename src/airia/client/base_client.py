"""`airia.client.base_client`, as in the official package: the base of both clients."""

from .._base_client import BaseClient as AiriaBaseClient

__all__ = ["AiriaBaseClient"]
