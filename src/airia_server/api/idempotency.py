"""`Idempotency-Key` on writes: a retry gets the first response, never a copy.

The POSTs that create take a key, and so do the PUTs and DELETEs: without one, a
DELETE retried after its answer was lost would say 404 for a delete that was done,
and a PUT retried so would store (and broadcast) its change twice.

The key is claimed before the work, and its response stored after it, for 24
hours. Keys are the caller's own (per API key, or per user of a bearer token):
another caller's key neither replays nor blocks. The same key with the same
request replays the stored response; with a different request it is 422; while
the first is still running, 409 with Retry-After. A request that fails releases
its key, so the client can retry it as it was. An answer that holds what must be
erasable (a conversation's update answers with its messages) is not stored: only
its status, and a replay answers with the resource as it is now (`current`). A
create's or an upload's kept answer goes when its conversation is deleted (the store
turns it into a 410), and a replay's links are signed anew (`refresh`).

A server may die between a request's write and the key's finish. So the key names,
from its first claim, the id of the resource its request creates (`resource_id`,
which the handler uses), and an endpoint may say how to `recover` the answer from
that resource: a retry whose key is unfinished gets the resource the first request
made, at once, if it exists; if it does not, the retry waits (409) while the first
may still be running, and after `ABANDONED_SECONDS` runs the request again, under
the same id. A request is done once, whenever its server died. A PUT or DELETE
creates nothing to recover from: after `ABANDONED_SECONDS` it runs again (a PUT
sets the same values, a DELETE of what is gone is 404).

Earlier versions spelled keys otherwise (`_earlier_spellings`). A retry of a request
an earlier version answered, in the 24 hours after an upgrade, finds that answer
there: a request is done once across an upgrade too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response

from airia_server.api.bodies import read_body
from airia_server.api.deps import current_principal, services
from airia_server.api.problems import PROBLEM_JSON
from airia_server.domain.auth import Principal
from airia_server.domain.maintenance import IDEMPOTENCY_KEY_TTL_SECONDS as KEY_TTL_SECONDS
from airia_server.errors import BadRequest, Conflict, ValidationFailed
from airia_server.ids import new_id, parse_id
from airia_server.storage.outages import Outage, outage_of
from airia_server.timeutil import format_us, now_us

log = logging.getLogger("airia_server.idempotency")
T = TypeVar("T")

HEADER = "idempotency-key"
Endpoint = Callable[[Request], Awaitable[Response]]
Recover = Callable[[Request, Principal, str], Awaitable[Response | None]]
"""The answer the request that created the resource with this id gave, rebuilt from
the resource; None if there is no such resource (the request never committed)."""

Current = Callable[[Request, Principal], Awaitable[Response]]
"""The answer a replay gets, made from the resource as it is now (see `idempotent`)."""

Refresh = Callable[[Request, Principal, dict], None]
"""Renews, in a kept answer's JSON, the links that expire (a `websocketUrl`'s ticket, a
download's signature): a retry an hour later gets links it can open."""

_RESOURCE_ID = "airia.resource_id"


def resource_id(request: Request) -> str | None:
    """The id the resource this request creates must take, under an Idempotency-Key
    (None without one: the handler mints its own)."""
    return request.scope.get(_RESOURCE_ID)


ABANDONED_SECONDS = 600
"""A claim never finished this long after it was made is taken as lost with its
server (killed mid-request). Longer than any request runs: a large upload's bytes
are held for 10 minutes too."""


def _key(request: Request) -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not (key.isascii() and key.isprintable()):
        raise BadRequest("Invalid Idempotency-Key", "Use 1 to 255 printable ASCII characters")
    return key


def _stored(status: int, body: bytes) -> Response:
    """A kept response, replayed (a DELETE's 204 with no body, and no type)."""
    if not body:
        media_type = None
    else:
        media_type = PROBLEM_JSON if status >= 400 else "application/json"
    return Response(
        body,
        status_code=status,
        media_type=media_type,
        headers={"Idempotent-Replayed": "true"},
    )


def _replayed(response: Response) -> Response:
    return _stored(response.status_code, bytes(response.body))


def _renewed(
    request: Request, principal: Principal, status: int, body: bytes, refresh: Refresh | None
) -> Response:
    """A kept answer, replayed with its links renewed (a success's, that is JSON)."""
    if refresh is not None and 200 <= status < 300 and body:
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if isinstance(answer, dict):
            refresh(request, principal, answer)
            body = json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()
    return _stored(status, body)


async def run_once(
    request: Request,
    principal: Principal,
    fingerprint: bytes,
    produce: Callable[[], Awaitable[Response]],
    recover: Recover | None = None,
    earlier_fingerprint: bytes | None = None,
    current: Current | None = None,
    refresh: Refresh | None = None,
) -> Response:
    """`earlier_fingerprint`: the request as earlier versions fingerprinted it, where
    that differs (the raw body, for JSON). `current`: the answer is not kept, only its
    status; a replay gets `current`'s (see `idempotent`). `refresh`: renews the links of
    a replayed answer."""
    given = key = _key(request)
    if key is None:
        return await produce()
    store = services(request).store
    digest = hashlib.sha256()
    for part in (request.method, _canonical_path(request)):
        digest.update(part.encode() + b"\0")
    digest.update(fingerprint)
    caller = _caller(principal)
    key = _callers_key(principal, key)
    now = now_us()
    claimed_at = format_us(now)
    expired_before = format_us(now - KEY_TTL_SECONDS * 1_000_000)
    claim = await store.claim_idempotency_key(
        principal.tenant_id,
        key,
        digest.hexdigest(),
        claimed_at,
        expired_before,
        format_us(now - ABANDONED_SECONDS * 1_000_000),
        resource_id=new_id(),
    )
    if claim.state == "new" and not claim.taken_over:
        earlier = await store.earlier_idempotency_response(
            principal.tenant_id,
            _earlier_spellings(
                request,
                principal,
                caller,
                given,
                fingerprint,
                fingerprint if earlier_fingerprint is None else earlier_fingerprint,
            ),
            expired_before,
        )
        if earlier is not None:  # answered by the version before an upgrade
            status, body = earlier
            await store.finish_idempotency_key(principal.tenant_id, key, claimed_at, status, body)
            return _renewed(request, principal, status, body, refresh)
    if claim.state == "replay":
        if current is not None:
            return _replayed(await current(request, principal))
        return _renewed(request, principal, claim.status or 200, claim.response or b"", refresh)
    if claim.state == "mismatch":
        raise ValidationFailed(
            "Idempotency-Key reused for a different request",
            "This key was first used with another body or path; use a new key for a new request",
            errors=[{"field": "Idempotency-Key", "message": "used for a different request"}],
        )

    async def written(token: str) -> Response | None:
        """The answer rebuilt from the resource the key names, if it was written (the
        key is then finished with it, under the claim `token`)."""
        if recover is None or claim.resource_id is None:
            return None
        done = await recover(request, principal, claim.resource_id)
        if done is None:
            return None
        await store.finish_idempotency_key(
            principal.tenant_id, key, token, done.status_code, bytes(done.body)
        )
        return _replayed(done)

    if claim.state == "pending":
        # Still running, or its server died after the write: then what it made is there.
        done = await written(claim.claimed_at or "")
        if done is not None:
            return done
        error = Conflict(
            "A request with this Idempotency-Key is still running", "Retry once it has finished"
        )
        error.headers["Retry-After"] = "1"
        raise error
    if claim.taken_over:  # its server died: before its write, or after it?
        done = await written(claimed_at)
        if done is not None:
            return done
    request.scope[_RESOURCE_ID] = claim.resource_id
    try:
        response = await produce()
    except BaseException as exc:
        # Was it written all the same? A request taken over that was not dead, only
        # slow (or its server's clock was off), may have written its resource
        # meanwhile, and this one then failed on the same id. And a connection cut
        # during a commit loses the answer, not the write: released, the key let the
        # retry write a second copy. What the key names is the answer, if it is there.
        if claim.taken_over or _maybe_written(exc):
            try:
                done = await _tried(lambda: written(claimed_at))
            except Exception:
                # Not to be looked for now (the database still away): the key stays
                # claimed, and the retry looks first (a pending claim does).
                raise exc from None
            if done is not None:
                return done
        await _release(store, principal.tenant_id, key, claimed_at)
        raise
    if 200 <= response.status_code < 300:
        kept = b"" if current is not None else bytes(response.body)
        await store.finish_idempotency_key(
            principal.tenant_id, key, claimed_at, response.status_code, kept
        )
    else:
        await _release(store, principal.tenant_id, key, claimed_at)
    return response


def _caller(principal: Principal) -> str:
    return (principal.user_id if principal.user_id is not None else principal.key_id) or ""


def _callers_key(principal: Principal, given: str) -> str:
    """The key as kept: the caller's own, an API key's or a bearer user's (never
    another's to replay). The caller's length first: a user id may hold ":" (user "a"
    with key "b:c" and user "a:b" with key "c" must not share one)."""
    caller = _caller(principal)
    return f"{principal.kind}:{len(caller)}:{caller}:{given}"


async def may_be_retry(request: Request, principal: Principal) -> bool:
    """Whether the request carries an Idempotency-Key this caller used in the last 24
    hours: a request refused before its body is read (an upload its caller may no
    longer make) reads it only then, to be answered as its first try was."""
    given = _key(request)
    if given is None:
        return False
    expired_before = format_us(now_us() - KEY_TTL_SECONDS * 1_000_000)
    return await services(request).store.idempotency_key_held(
        principal.tenant_id, _callers_key(principal, given), expired_before
    )


def _maybe_written(exc: BaseException) -> bool:
    """Whether `exc` leaves the request's write unknown: the database or the network
    failed under it (a connection lost, a timeout), rather than refusing it."""
    outage = outage_of(exc)
    if outage is not None:
        # Refused and rolled back for sure: a deadlock, the statement timeout, a
        # standby, a missing schema, a full disk. Away: the connection went.
        return outage is Outage.AWAY
    return isinstance(exc, (OSError, TimeoutError, asyncio.TimeoutError))


RELEASE_RETRY_DELAYS = (0.05, 0.25, 1.0)
"""Seconds between the attempts to release a failed request's key."""


async def _release(store, tenant_id: str, key: str, claimed_at: str) -> None:
    """The key of a request that failed made free again, so that its retry runs it.
    What failed the request was most often the database (a connection dropped by a
    failover, a proxy, an administrator), and the release may meet another such
    connection of the pool: it is tried again on a fresh one. Left claimed, the key
    answered every retry 409 "still running" for `ABANDONED_SECONDS` (10 minutes),
    as if its server had died. If every attempt fails, it is so all the same, and
    logged; the request's own error is what the caller is told."""
    try:
        await _tried(lambda: store.release_idempotency_key(tenant_id, key, claimed_at))
    except Exception as exc:
        log.warning(
            "could not release an Idempotency-Key of a failed request (%s: %s); "
            "its retries wait until it is taken over",
            type(exc).__name__,
            exc,
        )


async def _tried(attempt: Callable[[], Awaitable[T]]) -> T:
    """`attempt()`, tried again after each of `RELEASE_RETRY_DELAYS` while it raises
    (the pool's next connections may be as dead as the one that failed a request);
    the last attempt's error is raised."""
    for delay in RELEASE_RETRY_DELAYS:
        try:
            return await attempt()
        except Exception:
            await asyncio.sleep(delay)
    return await attempt()


def _earlier_spellings(
    request: Request,
    principal: Principal,
    caller: str,
    key: str,
    fingerprint: bytes,
    raw: bytes,
) -> list[tuple[str, str]]:
    """The caller's key and the request's hash as earlier versions kept them, for the
    24 hours their keys live after an upgrade. Each hashed the path as sent:

    - `kind:caller:key`, with the hash of the method, path and JSON (as sent, or, in
      later of those versions, `fingerprint`'s canonical spelling). Read only when
      neither the caller nor the key holds ":": it then names one caller's key alone,
      and never matches this version's spelling, which holds at least three ":".
    - Before keys were each caller's, the bare key, with the caller's kind and user id
      first in the hash: so it is one caller's too. Not read for a key spelled as the
      others are (`api_key:…`, `bearer:…`), which could match one of those.
    """

    def hashed(parts: tuple[str, ...], body: bytes) -> str:
        digest = hashlib.sha256()
        for part in parts:
            digest.update(part.encode() + b"\0")
        digest.update(body)
        return digest.hexdigest()

    method, path = request.method, request.url.path
    spellings = []
    if ":" not in caller and ":" not in key:
        spelled = f"{principal.kind}:{caller}:{key}"
        for body in dict.fromkeys((raw, fingerprint)):
            spellings.append((spelled, hashed((method, path), body)))
    if not key.startswith(("api_key:", "bearer:")):
        parts = (principal.kind, principal.user_id or "", method, path)
        spellings.append((key, hashed(parts, raw)))
    return spellings


def _canonical_path(request: Request) -> str:
    """The path as the route reads it: one conversation, however its id is spelled
    (upper or lower case), and without a trailing slash, is one path."""
    path = request.url.path.rstrip("/")
    raw = request.path_params.get("conversation_id")
    if raw:
        canonical = parse_id(raw)
        if canonical is not None and canonical != raw:
            path = path.replace(raw, canonical, 1)
    return path


def _json_fingerprint(body: bytes) -> bytes:
    """The request as the JSON it holds, not its bytes: a retry that spells the same
    JSON differently (spacing, key order, escapes) is the same request. Bytes that
    are not JSON are taken as they are (the handler refuses them anyway)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return body
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def idempotent(
    handler: Endpoint,
    recover: Recover | None = None,
    *,
    current: Current | None = None,
    refresh: Refresh | None = None,
) -> Endpoint:
    """For JSON POSTs, PUTs and DELETEs: the body (a DELETE's is empty) is read, within
    the size limit, to fingerprint the request; `recover` rebuilds a create's answer
    from what it created (see the module's docstring).

    `current`, for an answer that must not be kept: a conversation's update answers
    with the conversation and its messages, which a truncation, a delete or a user's
    erasure must take away from the server, not leave in a stored answer for 24
    hours. Only its status is kept, and a replay (still done once: no second change,
    no second event) answers with the resource as it is now, as the caller may see it
    now (a conversation deleted since is 404)."""

    async def wrapper(request: Request) -> Response:
        if HEADER not in request.headers:
            return await handler(request)
        principal = await current_principal(request)
        body = await read_body(request, services(request).settings.max_body_bytes)
        request._body = body  # Starlette serves it again to the handler
        return await run_once(
            request,
            principal,
            _json_fingerprint(body),
            lambda: handler(request),
            recover,
            earlier_fingerprint=body,
            current=current,
            refresh=refresh,
        )

    wrapper.__name__ = handler.__name__
    wrapper.__doc__ = handler.__doc__
    return wrapper
