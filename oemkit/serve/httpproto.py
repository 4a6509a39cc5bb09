"""uvicorn's httptools protocol with a bound on what of a request is not its body: the request line and headers, and
the trailers after a chunked body. h11 refuses a head past 16 KiB; httptools has no bound at all (uvicorn issue #157),
and it buffers a header that arrives in pieces by copying it again at each piece: one client streaming a 128 MiB
header (or trailer) cost the worker 17 s of CPU, every other connection of that worker waiting. Past MAX_HEAD bytes
the request is answered 431 and the connection closed; the body has its own bound (bodies.py).

Two checks. A head that is complete: the size of its request line and headers, when they are complete. One that is
not (yet): per data_received chunk, after the parser has seen it, a chunk counts when its request is open before and
after it and the chunk carried no body and ended no request — head or trailers only. So a head streamed in pieces is
refused once MAX_HEAD bytes of it have come, whatever the pieces; the one exception is the chunk that also ended the
previous request (pipelining), not counted, which leaves one read (uvloop reads at most 256 KiB) unbounded."""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

LINGER_S = 2.0  # seconds a refused connection's further bytes are read and dropped before it is closed
MAX_HEAD = 64 * 1024  # bytes: an Authorization header is at most 4 KiB here (auth.py), a report's path 32 characters

_BODY = json.dumps({"detail": f"the request line and headers are over {MAX_HEAD} bytes", "code": "head_too_large"})
_ANSWER = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _BODY.encode()
)


class BoundedHttpTools(HttpToolsProtocol):
    _open = False  # a request has begun and not completed
    _counted = 0  # bytes of the chunks that carried only its head or trailers
    _bodies = 0  # body pieces seen on this connection
    _completed = 0  # requests completed on this connection
    _refused = False
    _linger: asyncio.TimerHandle | None = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._open, self._counted = True, 0

    def on_headers_complete(self) -> None:
        if len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers) > MAX_HEAD:
            self._refuse()  # before uvicorn starts the request: the app never sees it
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._bodies += 1
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._open = False
        self._completed += 1
        if not self._refused:
            super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        bodies, completed = self._bodies, self._completed
        super().data_received(data)
        if self._refused or not self._open or self.transport.is_closing():
            return
        if self._bodies == bodies and self._completed == completed:
            self._counted += len(data)
            if self._counted > MAX_HEAD:
                self._refuse()

    def _refuse(self) -> None:
        self._refused = True
        self.logger.warning("refused a request whose head or trailers passed %d bytes (431)", MAX_HEAD)
        self.transport.write(_ANSWER)
        if not self.transport.can_write_eof():  # TLS: no half-close
            self.transport.close()
            return
        # a lingering close: closing with the client's bytes still unread sends it a reset, which can destroy the
        # answer before the client reads it; so the answer and our end first, then what still comes is read and
        # dropped (data_received) until LINGER_S, then the close
        self.transport.write_eof()
        self._linger = asyncio.get_running_loop().call_later(LINGER_S, self.transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)
