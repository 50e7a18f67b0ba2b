"""`run_once`, the Idempotency-Key protocol, against a store whose answers the test sets:
the paths a live server reaches only by a request slower than the abandonment window."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from starlette.requests import Request
from starlette.responses import Response

from airia_server.api import idempotency
from airia_server.domain.auth import Principal
from airia_server.storage.base import IdempotencyClaim

from .asgi import http_scope


class Keys:
    """The idempotency half of a store: one claim to hand out, and a record of what
    was finished and released."""

    def __init__(self, claim: IdempotencyClaim) -> None:
        self.claim = claim
        self.finished: list[tuple[str, int, bytes]] = []
        self.released: list[str] = []

    async def claim_idempotency_key(self, *args, **kwargs) -> IdempotencyClaim:
        return self.claim

    async def earlier_idempotency_response(self, *args, **kwargs) -> None:
        return None  # no earlier version kept an answer under another spelling

    async def finish_idempotency_key(self, tenant, key, claimed_at, status, response) -> None:
        self.finished.append((claimed_at, status, response))

    async def release_idempotency_key(self, tenant, key, claimed_at) -> None:
        self.released.append(claimed_at)


def keyed_request(store: Keys) -> Request:
    scope = http_scope("POST", "/v1/Conversations/c1/messages")
    scope["headers"].append((b"idempotency-key", b"k1"))
    scope["app"] = SimpleNamespace(services=SimpleNamespace(store=store))
    scope["path_params"] = {"conversation_id": "c1"}
    return Request(scope)


PRINCIPAL = Principal(tenant_id="t1", kind="api_key", key_id="key1")


async def test_a_takeover_that_loses_to_the_slow_first_request_answers_its_write() -> None:
    """The claim was taken over (the first request counted as dead), but the first was
    only slow: it wrote the resource, and this request's write then failed on the
    same id. The answer is the first's resource, and the key is kept, not released
    (a release had let a third try write a second copy)."""
    store = Keys(IdempotencyClaim(state="new", resource_id="r1", taken_over=True))
    recovered: list[str] = []
    exists = False

    async def recover(request, principal, resource_id):
        recovered.append(resource_id)
        return Response(b'{"messageId": "r1"}', status_code=201) if exists else None

    async def produce():
        nonlocal exists
        exists = True  # the first request commits meanwhile...
        raise RuntimeError("duplicate key value violates unique constraint")  # ...so this fails

    response = await idempotency.run_once(keyed_request(store), PRINCIPAL, b"{}", produce, recover)
    assert (response.status_code, response.body) == (201, b'{"messageId": "r1"}')
    assert response.headers["idempotent-replayed"] == "true"
    assert recovered == ["r1", "r1"]  # before the write, and after it failed
    assert len(store.finished) == 1 and store.released == []


async def test_a_request_that_fails_without_a_takeover_releases_its_key() -> None:
    store = Keys(IdempotencyClaim(state="new", resource_id="r1"))

    async def recover(request, principal, resource_id):
        raise AssertionError("nothing to recover on a first claim")

    async def produce():
        raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError):
        await idempotency.run_once(keyed_request(store), PRINCIPAL, b"{}", produce, recover)
    assert store.finished == [] and len(store.released) == 1


async def test_a_new_claim_hands_its_resource_id_to_the_handler() -> None:
    store = Keys(IdempotencyClaim(state="new", resource_id="r9"))
    request = keyed_request(store)

    async def produce():
        return Response(idempotency.resource_id(request).encode(), status_code=201)

    response = await idempotency.run_once(request, PRINCIPAL, b"{}", produce)
    assert response.body == b"r9"
    assert store.finished[0][1:] == (201, b"r9")


class FlakyKeys(Keys):
    """A store whose first releases meet dead connections, as after a failover."""

    def __init__(self, claim: IdempotencyClaim, failures: int) -> None:
        super().__init__(claim)
        self.failures = failures
        self.attempts = 0

    async def release_idempotency_key(self, tenant, key, claimed_at) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionResetError("connection was closed in the middle of operation")
        await super().release_idempotency_key(tenant, key, claimed_at)


@pytest.mark.parametrize("failures", [1, 3])
async def test_a_release_that_meets_a_dead_connection_is_tried_again(
    monkeypatch: pytest.MonkeyPatch, failures: int
) -> None:
    """The request failed on a dropped connection, and so did its key's release, on
    another: the key stayed claimed, and every retry was 409 "still running" for ten
    minutes. The release is tried again; the request's own error is what is raised."""
    monkeypatch.setattr(idempotency, "RELEASE_RETRY_DELAYS", (0.0, 0.0, 0.0))
    store = FlakyKeys(IdempotencyClaim(state="new"), failures)

    async def produce():
        raise OSError("the database connection was lost")

    with pytest.raises(OSError, match="connection was lost"):
        await idempotency.run_once(keyed_request(store), PRINCIPAL, b"{}", produce, None)
    assert store.attempts == failures + 1 and len(store.released) == 1


async def test_a_release_that_never_succeeds_leaves_the_request_s_own_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(idempotency, "RELEASE_RETRY_DELAYS", (0.0, 0.0, 0.0))
    store = FlakyKeys(IdempotencyClaim(state="new"), failures=10)

    async def produce():
        raise OSError("the database connection was lost")

    with pytest.raises(OSError, match="connection was lost"):
        await idempotency.run_once(keyed_request(store), PRINCIPAL, b"{}", produce, None)
    assert store.attempts == 4 and store.released == []
    assert "could not release an Idempotency-Key" in caplog.text


@pytest.mark.parametrize("written", [True, False])
async def test_a_write_whose_answer_was_cut_off_is_looked_for_before_its_key_goes(
    monkeypatch: pytest.MonkeyPatch, written: bool
) -> None:
    """A connection cut during the commit loses the answer, not the write. The key was
    released all the same, and the retry wrote a second copy. Now what the key names
    is looked for: there, it is the answer and the key is finished; not there, the
    key is released and the error raised."""
    monkeypatch.setattr(idempotency, "RELEASE_RETRY_DELAYS", (0.0, 0.0, 0.0))
    store = Keys(IdempotencyClaim(state="new", resource_id="m1"))

    async def recover(request, principal, resource_id):
        return Response(b'{"messageId": "m1"}', status_code=201) if written else None

    async def produce():
        raise ConnectionResetError("connection lost during COMMIT")

    if written:
        response = await idempotency.run_once(
            keyed_request(store), PRINCIPAL, b"{}", produce, recover
        )
        assert (response.status_code, response.body) == (201, b'{"messageId": "m1"}')
        assert len(store.finished) == 1 and store.released == []
    else:
        with pytest.raises(ConnectionResetError):
            await idempotency.run_once(keyed_request(store), PRINCIPAL, b"{}", produce, recover)
        assert store.finished == [] and len(store.released) == 1


async def test_a_write_that_cannot_be_looked_for_keeps_its_key_claimed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database still away: neither looked for nor released; the retry's pending
    claim looks for it first, once the database is back."""
    monkeypatch.setattr(idempotency, "RELEASE_RETRY_DELAYS", (0.0, 0.0, 0.0))
    store = Keys(IdempotencyClaim(state="new", resource_id="m1"))
    looks = []

    async def recover(request, principal, resource_id):
        looks.append(resource_id)
        raise ConnectionRefusedError("the database is away")

    async def produce():
        raise ConnectionResetError("connection lost during COMMIT")

    with pytest.raises(ConnectionResetError):
        await idempotency.run_once(keyed_request(store), PRINCIPAL, b"{}", produce, recover)
    assert looks == ["m1"] * 4 and store.released == [] and store.finished == []


async def test_a_write_the_database_refused_is_not_looked_for() -> None:
    """A statement PostgreSQL cancelled (the statement timeout) was rolled back: the
    key goes at once."""
    import asyncpg

    store = Keys(IdempotencyClaim(state="new", resource_id="m1"))

    async def recover(request, principal, resource_id):
        raise AssertionError("a refused write is not looked for")

    async def produce():
        raise asyncpg.QueryCanceledError("canceling statement due to statement timeout")

    with pytest.raises(asyncpg.QueryCanceledError):
        await idempotency.run_once(keyed_request(store), PRINCIPAL, b"{}", produce, recover)
    assert len(store.released) == 1
