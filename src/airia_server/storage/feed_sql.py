"""The feed's SQL, the same for every backend but for placeholders and LIKE.

Built so a page costs the same however many conversations there are and
however deep the page:

- a user's feed walks their participant rows, which carry a copy of each
  conversation's `updated_at` and `created_at`, through an index
  (`participants_feed_*`); a tenant's feed walks `conversations_tenant_*`;
- the page's ids come off the index alone (skipping rows for OFFSET touches
  no table), and only those rows are joined and get unread counts;
- with a cursor (`FeedQuery.after`) the page starts at its position in the index
  instead of counting rows from the start: deep pages cost what the first does;
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

_USER_SORT = {"updatedAt": "p.conv_updated_at", "createdAt": "p.conv_created_at"}
_TENANT_SORT = {"updatedAt": "c.updated_at", "createdAt": "c.created_at", "title": "c.title"}


class FeedSql:
    """`count` and `page` statements with their parameters."""

    def __init__(self, query: FeedQuery, placeholder: Callable[[int], str], postgres: bool) -> None:
        self._mark = placeholder
        direction = "DESC" if query.descending else "ASC"
        by_user = query.user_id is not None
        needs_title = bool(query.title_filter) or query.sort_by == "title"

        if by_user and not needs_title:
            source = "conversation_participants p"
            sort, tiebreak, id_column = (
                _USER_SORT[query.sort_by],
                "p.conversation_id",
                "p.conversation_id",
            )
        elif by_user:
            source = "conversation_participants p JOIN conversations c ON c.id = p.conversation_id"
            sort, tiebreak, id_column = _TENANT_SORT[query.sort_by], "c.id", "c.id"
        else:
            source = "conversations c"
            sort, tiebreak, id_column = _TENANT_SORT[query.sort_by], "c.id", "c.id"

        def where(params: list[Any]) -> str:
            marks = []
            table = "p" if by_user else "c"
            marks.append(f"{table}.tenant_id = {self._add(params, query.tenant_id)}")
            if by_user:
                marks.append(f"p.user_id = {self._add(params, query.user_id)}")
            if query.title_filter:
                text = query.title_filter
                escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                mark = self._add(params, f"%{escaped}%")
                marks.append(
                    f"c.title ILIKE {mark}" if postgres else f"c.title LIKE {mark} ESCAPE '\\'"
                )
            return " AND ".join(marks)

        self.count_params: list[Any] = []
        if query.title_filter:
            count_source = source if by_user else "conversations c"
            if by_user and "JOIN" not in count_source:
                count_source += " JOIN conversations c ON c.id = p.conversation_id"
            self.count = f"SELECT count(*) FROM {count_source} WHERE {where(self.count_params)}"
        elif by_user:
            tenant = self._add(self.count_params, query.tenant_id)
            user = self._add(self.count_params, query.user_id)
            self.count = (
                "SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM participant_counts "
                f"WHERE tenant_id = {tenant} AND user_id = {user}"
            )
        else:
            tenant = self._add(self.count_params, query.tenant_id)
            self.count = (
                "SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM tenant_conversation_counts "
                f"WHERE tenant_id = {tenant}"
            )

        self.page_params: list[Any] = []
        reader = self._add(self.page_params, query.user_id) if by_user else "c.user_id"
        inner_where = where(self.page_params)
        skip = (query.page_number - 1) * query.page_size
        if query.after is not None:
            if query.sort_by == "title":
                raise ValueError("keyset paging is by createdAt or updatedAt")
            key = self._add(self.page_params, query.after[0])
            after_id = self._add(self.page_params, query.after[1])
            beyond = "<" if query.descending else ">"
            inner_where += f" AND ({sort}, {tiebreak}) {beyond} ({key}, {after_id})"
            skip = 0
        limit = self._add(self.page_params, query.page_size)
        offset = self._add(self.page_params, skip)
        # The columns of FeedItem, in its order.
        self.page = (
            "SELECT c.id, c.user_id, c.title, c.message_count, "
            "(SELECT count(*) FROM messages m WHERE m.conversation_id = c.id AND m.position > "
            "coalesce((SELECT r.position FROM conversation_reads r WHERE "
            f"r.conversation_id = c.id AND r.user_id = {reader}), 0)), "
            "c.created_at, c.updated_at, c.is_bookmarked, c.deployment_id "
            f"FROM (SELECT {id_column} AS id, {sort} AS sort_key FROM {source} "
            f"WHERE {inner_where} ORDER BY {sort} {direction}, {tiebreak} {direction} "
            f"LIMIT {limit} OFFSET {offset}) page JOIN conversations c ON c.id = page.id "
            f"ORDER BY page.sort_key {direction}, page.id {direction}"
        )

    def _add(self, params: list[Any], value: Any) -> str:
        params.append(value)
        return self._mark(len(params))
