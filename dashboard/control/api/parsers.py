"""What the API reads request bodies with: JSON only (the acts' bodies have integers and
nulls a form cannot carry), and a body too deeply nested to read is malformed (400),
not a server error."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

MALFORMED_TOO_DEEP = (
    'malformed JSON: nested too deeply to read; send one flat object such as {"weight": 300}'
)


class StrictJSONParser(JSONParser):
    """DRF's JSON parser; Python's recursion limit (a body like `[[[[…]]]]` nested
    100,000 deep) is answered as a parse error."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(MALFORMED_TOO_DEEP) from None
