"""Naming the field behind a msgspec validation error."""

from __future__ import annotations

import msgspec
import pytest

from airia_server.api.bodies import field_of
from airia_server.api.schemas import CreateConversationRequest, UpdateConversationRequest


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Expected `str`, got `int` - at `$.userId`", "userId"),
        ("Object missing required field `userId`", "userId"),
        ("Object missing required field `b` - at `$.a`", "a.b"),
        ("Expected `array`, got `str` - at `$.dataSourceFiles[...]`", "dataSourceFiles[...]"),
        ("Expected `str`, got `int` - at `$.dataSourceFiles[...][0]`", "dataSourceFiles[...][0]"),
        ("Expected `object`, got `array`", None),
        ("", None),
        ("something else entirely", None),
    ],
)
def test_field_of(message: str, expected: str | None) -> None:
    assert field_of(message) == expected


def _error(struct: type, raw: bytes) -> str:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.json.decode(raw, type=struct)
    return str(info.value)


@pytest.mark.parametrize(
    ("struct", "raw", "expected"),
    [
        (CreateConversationRequest, b'{"userId": 1}', "userId"),
        (CreateConversationRequest, b"{}", "userId"),
        (CreateConversationRequest, b'{"userId": ""}', "userId"),
        (CreateConversationRequest, b'{"userId": "u", "isBookmarked": "yes"}', "isBookmarked"),
        (CreateConversationRequest, b'{"userId": "u", "dataSourceFiles": []}', "dataSourceFiles"),
        (UpdateConversationRequest, b"{}", "title"),
        (
            UpdateConversationRequest,
            b'{"title": "t", "lastExecutionStatus": "x"}',
            "lastExecutionStatus",
        ),
    ],
)
def test_field_of_real_msgspec_errors(struct: type, raw: bytes, expected: str) -> None:
    field = field_of(_error(struct, raw))
    assert field is not None and field.startswith(expected)


def test_top_level_type_error_names_no_field() -> None:
    assert field_of(_error(CreateConversationRequest, b"[]")) is None
