"""The clients, at the import paths the official package uses (`airia.client`,
`airia.client.sync_client`, `airia.client.async_client`, `airia.client.base_client`,
`airia.client.conversations` and its `sync_conversations`, `async_conversations`,
`base_conversations`), so imports and `mock.patch` targets written for it
keep working."""

from .._client import AiriaAsyncClient, AiriaClient

__all__ = ["AiriaAsyncClient", "AiriaClient"]
