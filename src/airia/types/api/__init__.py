"""Response models of the Airia API, grouped by resource.

Each resource's models are also importable from here, as the official package
allows (`from airia.types.api import GetConversationResponse`).
"""

from . import conversations as conversations
from .conversations import *  # noqa: F403 - the resource's public names, listed there once
from .conversations import __all__ as _conversations_all

__all__ = [*_conversations_all, "conversations"]
