"""External identities: wire shape, the 409 that names the existing conversation, lookup."""

import json

import pytest

from airia import ConflictError, ExternalIdentityConflictError, NotFoundError
from airia import exceptions as public_exceptions
from airia.types.api import ExternalIdentity, GetConversationResponse

from .conftest import FakeServer, problem

SLACK = ("Slack", "C024BE91L", "1712345678.000100")


@pytest.fixture
def call(api):
    return api()


@pytest.fixture
def cid(call) -> str:
    return call("create_conversation", user_id="owner").conversation_id


def test_add_list_remove(call, cid, server: FakeServer):
    added = call("add_external_identity", cid, *SLACK)
    assert isinstance(added, ExternalIdentity)
    assert (added.conversation_id, added.external_system, added.external_thread_id) == (
        cid,
        "Slack",
        "1712345678.000100",
    )
    assert added.created_at is not None
    request = server.last
    assert (request.method, request.url.path) == (
        "POST",
        f"/v1/Conversations/{cid}/external-identities",
    )
    assert json.loads(request.content) == {
        "externalSystem": "Slack",
        "externalChannelId": "C024BE91L",
        "externalThreadId": "1712345678.000100",
    }

    listed = call("list_external_identities", cid)
    assert [i.id for i in listed] == [added.id]
    assert server.last.url.path == f"/v1/Conversations/{cid}/external-identities"

    assert call("remove_external_identity", cid, added.id) is None
    assert (server.last.method, server.last.url.path) == (
        "DELETE",
        f"/v1/Conversations/{cid}/external-identities/{added.id}",
    )
    assert call("list_external_identities", cid) == []
    with pytest.raises(NotFoundError):
        call("remove_external_identity", cid, added.id)


def test_same_triple_elsewhere_is_a_conflict_naming_the_existing_conversation(call, cid):
    call("add_external_identity", cid, *SLACK)
    other = call("create_conversation", user_id="owner").conversation_id
    with pytest.raises(ExternalIdentityConflictError) as caught:
        call("add_external_identity", other, *SLACK)
    error = caught.value
    assert isinstance(error, ConflictError) and error.status_code == 409
    assert error.existing_conversation_id == cid
    assert error.body["conversationId"] == cid
    assert error.message == "External identity already mapped"
    assert public_exceptions.ExternalIdentityConflictError is ExternalIdentityConflictError


def test_a_conflict_without_a_conversation_id_stays_a_plain_conflict(call, cid, server):
    server.script(problem(409, "A conversation needs an Owner"))
    with pytest.raises(ConflictError) as caught:
        call("remove_participant", cid, "owner")
    assert type(caught.value) is ConflictError


def test_find_by_external_identity(call, cid, server: FakeServer):
    call("add_message", cid, "hello")
    call("add_external_identity", cid, *SLACK)
    found = call("find_conversation_by_external_identity", *SLACK)
    assert isinstance(found, GetConversationResponse)
    assert found.conversation_id == cid
    assert [m.message for m in found.messages] == ["hello"]
    request = server.last
    assert (request.method, request.url.path) == (
        "GET",
        "/v1/Conversations/external-identities/lookup",
    )
    assert dict(request.url.params) == {
        "externalSystem": "Slack",
        "externalChannelId": "C024BE91L",
        "externalThreadId": "1712345678.000100",
    }
    with pytest.raises(NotFoundError):
        call("find_conversation_by_external_identity", "Slack", "C024BE91L", "other-thread")


def test_ids_and_values_are_quoted(call, cid, server: FakeServer):
    server.script(problem(404, "External identity not found"))
    with pytest.raises(NotFoundError):
        call("remove_external_identity", cid, "a/b?c")
    assert server.last.url.raw_path.decode().endswith("/external-identities/a%2Fb%3Fc")
    server.script(problem(404, "nope"))
    with pytest.raises(NotFoundError):
        call("find_conversation_by_external_identity", "Teams", "a&b=c", "t#1")
    assert server.last.url.params["externalChannelId"] == "a&b=c"
    assert server.last.url.params["externalThreadId"] == "t#1"


def test_server_validation_is_passed_through(call, cid, server: FakeServer):
    from airia import UnprocessableEntityError

    errors = [{"loc": ["body", "externalSystem"], "msg": "must match ^[A-Za-z][A-Za-z0-9]*$"}]
    server.script(problem(422, "Validation failed", errors=errors))
    with pytest.raises(UnprocessableEntityError) as caught:
        call("add_external_identity", cid, "1slack", "c", "t")
    assert caught.value.errors == errors
