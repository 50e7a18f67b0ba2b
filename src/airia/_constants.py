"""Defaults for every client setting; each can be overridden per client."""

DEFAULT_BASE_URL = "http://localhost:8000/"
DEFAULT_TIMEOUT = 30.0

DEFAULT_MAX_RETRIES = 2
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
# A server asking us to wait longer than this is treated as "do not retry"
# rather than blocking the caller for minutes.
MAX_RETRY_AFTER = 60.0

RETRYABLE_STATUS_CODES = frozenset({408, 429, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# A POST carrying this header is retried like an idempotent request: the server
# answers a repeat of the same key with the first response instead of acting twice.
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
# The server's "the first request with this key is still running" answer; it is
# retried only when it comes with Retry-After, and only for requests with a key.
IN_PROGRESS_STATUS = 409

API_KEY_ENV = "AIRIA_API_KEY"
# The key the documentation's examples pass (`AiriaClient(api_key="your_api_key")`):
# it stands for AIRIA_API_KEY when that is set, so they run as written against a
# server whose key is in the environment.
PLACEHOLDER_API_KEY = "your_api_key"
BASE_URL_ENV = "AIRIA_BASE_URL"
LOGGER_NAME = "airia"

# Real-time channel: waits between reconnects double from the first to the cap.
RECONNECT_INITIAL_DELAY = 0.5
RECONNECT_MAX_DELAY = 30.0

# Close codes of the real-time channel.
CLOSE_NORMAL = 1000  # the conversation was deleted: stop
CLOSE_GOING_AWAY = 1001  # the server is restarting: reconnect
CLOSE_ABNORMAL = 1006  # no close frame (connection dropped): reconnect
CLOSE_POLICY_VIOLATION = 1008  # refused or access removed: stop with an error
CLOSE_RESUME = 4000  # fell behind, or after= past the end: reconnect after the reason's N
