"""The feed's SQL, the same for every backend but for placeholders and how titles
are matched (ILIKE, or SQLite's LIKE and a function past ASCII).

Built so a page costs the same however many conversations there are and
however deep the page:

- a user's feed walks their participant rows, which carry a copy of each
  conversation's `updated_at` and `created_at`, through an index
  (`participants_feed_*`); a tenant's feed walks `conversations_tenant_*`;
- the page's ids come off the index alone (skipping rows for OFFSET touches
  no table), and only those rows are joined and get unread counts;
- with a cursor (`FeedQuery.after`) the page starts at its position in the index
  instead of counting rows from the start: deep pages cost what the first does;
- a page by number in the back half of the feed is read from the other end of the
  index, skipping the rows after it rather than those before: the last page costs
  what the first does, and no page skips more than half the feed;
- `totalCount` without a title filter is read from counters that triggers
  keep current (`participant_counts`, `tenant_conversation_counts`): the sum of
  a counter's rows, one on SQLite and one per slot on PostgreSQL (its migration
  0009 says why).

Sorting by title, or filtering on it, reads the conversations themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airia_server.storage.base import FeedQuery

CONTAINS_IGNORING_CASE = "airia_contains_ci"
"""A function every SQLite connection of the store has (`contains_ignoring_case`)."""


# PostgreSQL's ILIKE lower-cases both sides a character at a time (towlower), where
# Python's str.lower turns 'İ' into two characters and 'Σ' into 'ς' at the end of a
# word. Translating these two first makes str.lower give what towlower gives, for
# every character (tests/server/test_feed_sql.py checks them all against PostgreSQL).
_ONE_TO_ONE = str.maketrans({"\u0130": "i", "\u03a3": "\u03c3"})

# The characters past ASCII whose lower case is an ASCII letter ('İ' and the Kelvin
# sign), by that letter: SQLite's LIKE, which folds ASCII alone, misses them.
_FOLDS_INTO_ASCII = {"i": "\u0130", "k": "\u212a"}


def fold_case(text: str) -> str:
    """`text` lower-cased as PostgreSQL's ILIKE lower-cases it."""
    return text.translate(_ONE_TO_ONE).lower()


def contains_ignoring_case(text: str | None, folded_needle: str) -> bool:
    """Whether `text` contains the needle (given through `fold_case`), ignoring case
    beyond ASCII as PostgreSQL's ILIKE does."""
    return text is not None and folded_needle in fold_case(text)


_USER_SORT = {"updatedAt": "p.conv_updated_at", "createdAt": "p.conv_created_at"}
_TENANT_SORT = {"updatedAt": "c.updated_at", "createdAt": "c.created_at", "title": "c.title"}

# A conversation's unread messages: those after the reader's read position `r`.
# Counting them walks the messages after `r`; counting those up to `r` and taking
# them from `message_count` (kept in the same transactions as the messages) walks
# the messages before it. Each row takes the shorter walk (`message_seq` is the
# highest position ever given, so it bounds the walk after `r`): a reader who never
# marked anything read costs nothing, nor does one who is up to date. (Walking every
# unread message instead cost 2.5 ms for a page of 20 conversations of 1,000
# messages each, against 84 us with none.)
_UNREAD = (
    "CASE WHEN r.position IS NULL OR r.position <= 0 THEN c.message_count "
    "WHEN c.message_seq - r.position <= r.position THEN (SELECT count(*) FROM messages m "
    "WHERE m.conversation_id = c.id AND m.position > r.position) "
    "ELSE c.message_count - (SELECT count(*) FROM messages m "
    "WHERE m.conversation_id = c.id AND m.position <= r.position) END"
)


class FeedSql:
    """The `count` statement with its parameters, and the page's (`page(total)`)."""

    def __init__(self, query: FeedQuery, placeholder: Callable[[int], str], postgres: bool) -> None:
        self._query = query
        self._mark = placeholder
        self._postgres = postgres
        self.count_params: list[Any] = []
        self.count = self._count(self.count_params)

    def _source(self) -> tuple[str, str, str]:
        """What the feed reads, its sort column and its tiebreak (the conversation id).
        A user's feed walks their participant rows alone, unless it needs titles."""
        query = self._query
        if query.user_id is None:
            return "conversations c", _TENANT_SORT[query.sort_by], "c.id"
        if query.title_filter or query.sort_by == "title":
            source = "conversation_participants p JOIN conversations c ON c.id = p.conversation_id"
            return source, _TENANT_SORT[query.sort_by], "c.id"
        return "conversation_participants p", _USER_SORT[query.sort_by], "p.conversation_id"

    def _count(self, params: list[Any]) -> str:
        query = self._query
        by_user = query.user_id is not None
        if query.title_filter:
            source, _, _ = self._source()
            return f"SELECT count(*) FROM {source} WHERE {self._where(params)}"
        if by_user:
            tenant = self._add(params, query.tenant_id)
            user = self._add(params, query.user_id)
            return (
                "SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM participant_counts "
                f"WHERE tenant_id = {tenant} AND user_id = {user}"
            )
        tenant = self._add(params, query.tenant_id)
        return (
            "SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM tenant_conversation_counts "
            f"WHERE tenant_id = {tenant}"
        )

    def _where(self, params: list[Any]) -> str:
        query = self._query
        table = "p" if query.user_id is not None else "c"
        marks = [f"{table}.tenant_id = {self._add(params, query.tenant_id)}"]
        if query.user_id is not None:
            marks.append(f"p.user_id = {self._add(params, query.user_id)}")
        if query.title_filter:
            marks.append(self._title_matches(params, query.title_filter))
        return " AND ".join(marks)

    def _title_matches(self, params: list[Any], text: str) -> str:
        if not self._postgres and not text.isascii():
            # SQLite's LIKE ignores the case of ASCII letters only ("über" would miss
            # "Über"): past ASCII, a function ignores case as ILIKE does.
            mark = self._add(params, fold_case(text))
            return f"{CONTAINS_IGNORING_CASE}(c.title, {mark})"
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        mark = self._add(params, f"%{escaped}%")
        if self._postgres:
            return f"c.title ILIKE {mark}"
        like = f"c.title LIKE {mark} ESCAPE '\\'"
        # An ASCII needle is matched by LIKE, in C, but for the titles that hold a
        # character LIKE does not fold into the needle's letters ("istanbul" in
        # "İstanbul"): those alone go through the function.
        sources = [
            _FOLDS_INTO_ASCII[c] for c in sorted(set(text.lower())) if c in _FOLDS_INTO_ASCII
        ]
        if not sources:
            return like
        holds = " OR ".join(f"instr(c.title, {self._add(params, c)})" for c in sources)
        needle = self._add(params, fold_case(text))
        return f"({like} OR (({holds}) AND {CONTAINS_IGNORING_CASE}(c.title, {needle})))"

    def page(self, total: int) -> tuple[str, list[Any]]:
        """The page's statement and parameters, given the feed's `total` as `count` read it.

        A page by number whose rows lie nearer the end than the start is read in the
        opposite order, skipping the rows after it, and put back in order. Without a
        title filter `total` is a counter, and the statement reads it again itself, so
        the rows it skips from the end are counted in the same snapshot as the page:
        a write between the two statements changes which end is nearer, never which
        rows the page holds. With a title filter the count is no counter and the page
        is read from the start.
        """
        query = self._query
        by_user = query.user_id is not None
        source, sort, tiebreak = self._source()
        params: list[Any] = []
        skip = (query.page_number - 1) * query.page_size
        from_end = (
            query.after is None
            and not query.title_filter
            and max(total - skip - query.page_size, 0) < skip
        )
        prefix = ""
        if from_end:
            prefix = f"WITH feed_total (n) AS ({self._count(params)}) "
        reader = self._add(params, query.user_id) if by_user else "c.user_id"
        inner_where = self._where(params)
        if query.after is not None:
            if query.sort_by == "title":
                raise ValueError("keyset paging is by createdAt or updatedAt")
            key = self._add(params, query.after[0])
            after_id = self._add(params, query.after[1])
            beyond = "<" if query.descending else ">"
            inner_where += f" AND ({sort}, {tiebreak}) {beyond} ({key}, {after_id})"
            skip = 0
        if from_end:
            # The rows from `skip` on, counted back from the last: `n - skip` of them
            # (none once past the end, at most a page), after the `n - skip - size` that
            # follow the page. LIMIT is bounded below by 0: SQLite reads a negative one
            # as no limit at all. (Marks repeat: both backends' placeholders are numbered.)
            inner = not query.descending
            left = f"n - {self._add(params, skip)}"
            size = self._add(params, query.page_size)
            limit = (
                f"(SELECT CASE WHEN {left} <= 0 THEN 0 WHEN {left} < {size} THEN {left} "
                f"ELSE {size} END FROM feed_total)"
            )
            rest = f"{left} - {size}"
            offset = f"(SELECT CASE WHEN {rest} > 0 THEN {rest} ELSE 0 END FROM feed_total)"
        else:
            inner = query.descending
            limit = self._add(params, query.page_size)
            offset = self._add(params, skip)
        inner_direction = "DESC" if inner else "ASC"
        direction = "DESC" if query.descending else "ASC"
        inner_nulls = nulls = collate = ""
        if query.sort_by == "title":
            # An untitled conversation sorts before every title, on both backends
            # (PostgreSQL's default puts NULL last ascending, SQLite's first).
            inner_nulls = " NULLS LAST" if inner else " NULLS FIRST"
            nulls = " NULLS LAST" if query.descending else " NULLS FIRST"
            if self._postgres:
                # Titles in code point order, as SQLite sorts them, whatever collation
                # the database was made with ('en-US' puts "apple" before "Banana").
                collate = ' COLLATE "C"'
        # The columns of FeedItem, in its order.
        statement = (
            f"{prefix}SELECT c.id, c.user_id, c.title, c.message_count, {_UNREAD}, "
            "c.created_at, c.updated_at, c.is_bookmarked, c.deployment_id "
            f"FROM (SELECT {tiebreak} AS id, {sort} AS sort_key FROM {source} "
            f"WHERE {inner_where} ORDER BY {sort}{collate} {inner_direction}{inner_nulls}, "
            f"{tiebreak} {inner_direction} "
            f"LIMIT {limit} OFFSET {offset}) page JOIN conversations c ON c.id = page.id "
            "LEFT JOIN conversation_reads r "
            f"ON r.conversation_id = c.id AND r.user_id = {reader} "
            f"ORDER BY page.sort_key{collate} {direction}{nulls}, page.id {direction}"
        )
        return statement, params

    def _add(self, params: list[Any], value: Any) -> str:
        params.append(value)
        return self._mark(len(params))
