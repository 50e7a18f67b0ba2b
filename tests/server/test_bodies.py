"""Naming the field behind a msgspec validation error."""

from __future__ import annotations

import msgspec
import pytest

from airia_server.api.bodies import MAX_JSON_DEPTH, field_of, nested_too_deeply
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


@pytest.mark.parametrize(
    ("text", "too_deep"),
    [
        ("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH, False),
        ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), True),
        ('{"a": ' * (MAX_JSON_DEPTH + 1) + "1" + "}" * (MAX_JSON_DEPTH + 1), True),
        ("[" + "[], " * 100_000 + "[]]", False),  # many brackets, shallow
        ('{"message": "' + "[" * 100_000 + '"}', False),  # brackets in a string
        ('{"message": "\\"' + "[" * 100_000 + '"}', False),  # after an escaped quote
        ("[" * 50_000, True),  # deep, and not even JSON
    ],
    ids=["at the limit", "past it", "objects", "shallow", "in a string", "escape", "unclosed"],
)
def test_json_nesting_is_measured_the_same_on_every_python(text: str, too_deep: bool) -> None:
    """msgspec's own limit is Python's recursion limit, which 3.12 raised about tenfold."""
    assert nested_too_deeply(text) is too_deep
