"""Error answers of `unetlite serve`: JSON ``{"error": "one line", "reason": "...", ...numbers}``.

``error`` is the sentence; ``reason`` a stable word a client can switch on, with the numbers
behind it, so a page can say "too large: 140 MP, the limit is 100 MP" in its own words:

=================  ======  ==========================================================
reason             status  extra fields
=================  ======  ==========================================================
not_an_image       400     (name in the message)
token              401
body_timeout       408     seconds
body_too_large     413     bytes (when known), max_bytes
too_many_pixels    422     width, height, pixels, max_pixels
bad_parameter      422
busy               503     (queue full, or no slot within --queue-wait)
memory             503     needed_bytes, budget_bytes
shutting_down      503
=================  ======  ==========================================================
"""
from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


class ApiError(Exception):  # an HTTP answer, not a command's error: no exit code
    """An error answer: status, one-line message, extra headers, machine-readable details."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None,
                 reason: str | None = None, **detail: Any):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}
        self.reason, self.detail = reason, detail

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.reason, **self.detail)


def error_body(message: str, reason: str | None = None, **detail: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"error": message}
    if reason:
        body["reason"] = reason
    body.update(detail)
    return body


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
