"""The Airia Conversations service: HTTP API, real-time channel and storage."""

__version__ = "0.1.0"
