"""uvicorn's HTTP/1.1 protocol (h11) with its one plain-text answer made JSON like every other.

uvicorn refuses a request head it cannot take (a request line or header over h11's limit, a
malformed request) before the app sees it, with ``400 Invalid HTTP request received.`` in plain
text. This subclass sends the same 400 and closes the connection the same way, with the body
``{"error": "invalid HTTP request: ...", "reason": "bad_request"}`` (uvicorn's message is always the
same, so the body says what it can mean). Passed to uvicorn as
``Config(http=...)``; without it (another uvicorn protocol) the plain-text 400 stays.
"""
from __future__ import annotations

import json


def json_h11_protocol() -> type:
    """The protocol class (imported here: uvicorn is part of the [serve] extra)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class JsonErrorH11Protocol(H11Protocol):
        def send_400_response(self, msg: str) -> None:
            body = json.dumps({"error": "invalid HTTP request: malformed, or its request line or headers are over "
                                        "the server's limit", "reason": "bad_request"}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                       (b"connection", b"close")]
            try:
                for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                              h11.Data(data=body), h11.EndOfMessage()):
                    self.transport.write(self.conn.send(event))
            except h11.LocalProtocolError:  # h11 cannot answer in this state: close as uvicorn would
                pass
            self.transport.close()

    return JsonErrorH11Protocol
