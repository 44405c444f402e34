"""Pages of lists: numbered pages for objects, an ``after`` cursor for log followers.

    GET /api/jobs/?page=2&page_size=100
        {"count": 230, "next": ".../?page=3&page_size=100", "previous": ..., "results": [...]}

    GET /api/logs/?job=7&after=120
        {"after": 164, "next": null, "results": [{"id": 121, ...}, ..., {"id": 164, ...}]}

A follower keeps the ``after`` of each answer and asks again with it: rows come in id order,
so nothing is missed or repeated. ``next`` is set only when more rows are already waiting.
"""

from __future__ import annotations

from typing import Any

from rest_framework.pagination import BasePagination, PageNumberPagination, _positive_int
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param


class StandardPagination(PageNumberPagination):
    """Numbered pages of 50 objects; ``page_size`` asks for up to 1000."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 1000


class AfterPagination(BasePagination):
    """Rows above the ``after`` id (the filter applies it), oldest first, ``page_size`` at a time.

    No ``count`` is computed, so a follower polling a long log stays cheap.
    """

    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000
    cursor_query_param = "after"

    def get_page_size(self, request) -> int:
        try:
            return _positive_int(
                request.query_params[self.page_size_query_param],
                strict=True,
                cutoff=self.max_page_size,
            )
        except (KeyError, ValueError):
            return self.page_size

    def paginate_queryset(self, queryset, request, view=None) -> list[Any]:
        self.request = request
        size = self.get_page_size(request)
        if isinstance(queryset, list):  # rows read elsewhere (an archive), in id order
            rows = queryset[: size + 1]
        else:
            rows = list(queryset.order_by("id")[: size + 1])
        self.has_more = len(rows) > size
        self.rows = rows[:size]
        if self.rows:
            self.after = self.rows[-1].pk
        else:
            try:
                self.after = int(request.query_params[self.cursor_query_param])
            except (KeyError, ValueError):
                self.after = None
        return self.rows

    def get_next_link(self) -> str | None:
        if not self.has_more:
            return None
        url = self.request.build_absolute_uri()
        return replace_query_param(url, self.cursor_query_param, self.after)

    def get_paginated_response(self, data) -> Response:
        return Response({"after": self.after, "next": self.get_next_link(), "results": data})

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return {
            "type": "object",
            "required": ["after", "next", "results"],
            "properties": {
                "after": {
                    "type": "integer",
                    "nullable": True,
                    "description": "Pass as `after` in the next request: the id of the last row "
                    "returned (or the `after` given, when nothing is new).",
                },
                "next": {
                    "type": "string",
                    "format": "uri",
                    "nullable": True,
                    "description": "URL of the following rows when more are already stored; "
                    "null once the follower has caught up.",
                },
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return [
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": f"Rows per answer (default {self.page_size}, "
                f"at most {self.max_page_size}).",
                "schema": {"type": "integer", "minimum": 1},
            }
        ]
