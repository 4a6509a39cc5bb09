"""uvicorn's httptools protocol with a bound on a request's head (request line and headers). h11 refuses a head past
16 KiB; httptools has no bound at all (uvicorn issue #157), and it buffers a header that arrives in pieces by copying
it again at each piece: one client streaming a 128 MiB header cost the worker 17 s of CPU, every other connection of
that worker waiting. Past MAX_HEAD bytes the request is answered 431 and the connection closed.

The bytes are counted per data_received chunk, after the parser has seen it: a chunk counts while the head it belongs
to is still incomplete; the chunk in which a request begins is not counted (it may hold the previous request's body),
so a head is refused by MAX_HEAD plus one read (uvloop reads at most 256 KiB) at the latest — never a large body."""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD = 64 * 1024  # bytes: an Authorization header is at most 4 KiB here (auth.py), a report's path 32 characters

_BODY = json.dumps({"detail": f"the request line and headers are over {MAX_HEAD} bytes", "code": "head_too_large"})
_ANSWER = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _BODY.encode()
)


class BoundedHttpTools(HttpToolsProtocol):
    _in_head = False  # between on_message_begin and on_headers_complete
    _head_bytes = 0
    _begun = 0  # requests begun on this connection

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes, self._begun = True, 0, self._begun + 1

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        was_in_head, begun = self._in_head, self._begun
        super().data_received(data)
        if not (self._in_head and was_in_head and begun == self._begun) or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD:
            self.logger.warning("refused a request whose head passed %d bytes (431)", MAX_HEAD)
            self.transport.write(_ANSWER)
            self.transport.close()
