"""One POST to the provisioning service, as the box makes it (docs/zero-touch.md, "HTTP contract (v1)").

http.client, not urllib.request: no proxy, redirect or cookie machinery a box needs none of. HTTPS trusts exactly
the CA the signed unit config pins (no system CAs: the core has none), with the host name checked; an https URL
without a pinned CA, or a pinned CA with an http URL, is refused before anything is sent. Every request is bounded:
an absolute deadline, each socket operation (connect, TLS handshake, every send and read) given only the time left
until it (a server dripping a byte at a time cannot hold the box past it), and the answer is read up to
MAX_ANSWER_BYTES. Only the name lookup cannot be interrupted: a connection made after the deadline is closed unused.

Host names go to socket and ssl as bytes: given a str, both encode it with the idna codec, which the core's
Python does not carry (codecs are looked up by name, so the import scan that picks the core's modules never sees
it), and every connection would fail with "unknown encoding: idna".
"""

from __future__ import annotations

import io
import json
import re
import socket
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hypervisor_core import __version__

MAX_ANSWER_BYTES = 64 << 10
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}|[0-9A-Fa-f:.]{2,45}")  # an ASCII DNS name, IPv4 or IPv6 literal


class EndpointError(Exception):
    """The phone-home URL (or its CA) cannot be used; `str()` says why."""


class TransportError(Exception):
    """No HTTP answer: refused, timed out, TLS failed... `permanent`: retrying within this boot cannot help."""

    def __init__(self, why: str, permanent: bool = False) -> None:
        super().__init__(why)
        self.permanent = permanent


@dataclass(frozen=True)
class Endpoint:
    scheme: str  # http | https
    host: str
    port: int
    prefix: str  # the base URL's path, without a trailing '/'
    ca_pem: str | None = field(default=None, repr=False)

    def where(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.prefix}{path}"


@dataclass(frozen=True)
class Answer:
    status: int
    doc: dict[str, Any]  # the JSON answer; {} when it is not a JSON object
    retry_after: float | None = None  # seconds, from a Retry-After header in seconds

    @property
    def code(self) -> str:
        code = self.doc.get("code")
        return _printable(code, 60) if isinstance(code, str) else ""

    @property
    def detail(self) -> str:
        detail = self.doc.get("detail")
        return _printable(detail, 300) if isinstance(detail, str) else f"HTTP {self.status}"


def endpoint(url: str, ca_pem: str | None) -> Endpoint:
    """The service's base URL, checked: http or https, a plain host, no credentials, query or fragment."""
    if not url.isascii() or any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise EndpointError(f"phone-home URL {url!r} holds spaces, control or non-ASCII characters")
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise EndpointError(f"phone-home URL {url!r} is neither http:// nor https://")
    if "@" in parts.netloc:
        raise EndpointError("phone-home URL holds credentials: refused (they would end up in logs)")
    if parts.query or parts.fragment:
        raise EndpointError(f"phone-home URL {url!r} has a query or fragment: it must be the service's base URL")
    host = parts.hostname or ""
    if not _HOST.fullmatch(host):
        raise EndpointError(f"phone-home URL {url!r} names no usable host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise EndpointError(f"phone-home URL {url!r} has a port that is not a number from 1 to 65535") from None
    if scheme == "https" and not ca_pem:
        raise EndpointError(f"phone-home URL {url} is https but the unit config pins no CA (phone_home.ca_pem)")
    if scheme == "http" and ca_pem:
        raise EndpointError(f"phone-home URL {url} is plain http but the unit config pins a CA: refusing to send "
                            "in the clear what is meant for TLS")  # fmt: skip
    return Endpoint(scheme, host, port, parts.path.rstrip("/"), ca_pem)


def post(ep: Endpoint, path: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Answer:
    """POST `body` (JSON) to the service; the answer, whatever its status. TransportError when there is none."""
    # Imported here: only a box that has something to send pays for http.client, email and ssl (0.15 s under TCG).
    import http.client
    import ssl

    context: ssl.SSLContext | None = None
    if ep.ca_pem is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # certificate and host name required
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_verify_locations(cadata=ep.ca_pem)  # the pinned CA only: no system CAs are loaded
        except (ssl.SSLError, ValueError) as exc:
            raise TransportError(f"the pinned CA does not load: {exc}", permanent=True) from None

    deadline = time.monotonic() + timeout
    opened: list[socket.socket] = []  # closed when the request ends, whatever http.client did with them

    class Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            host = self.host.encode("ascii")  # bytes: no idna codec on the core (module docstring)
            sock = socket.create_connection((host, self.port), _left(deadline))  # type: ignore[arg-type]
            try:
                _left(deadline)  # the name lookup, or one address after another, may have used it all up
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if context is not None:
                    sock.settimeout(_left(deadline))  # the handshake: one operation as ssl sees it
                    sock = context.wrap_socket(sock, server_hostname=host)
            except BaseException:
                sock.close()
                raise
            opened.append(sock)
            self.sock = _Bounded(sock, deadline)  # type: ignore[assignment]  # what http.client uses of a socket

    conn = Connection(ep.host, ep.port, timeout=timeout)
    try:
        sent = {"Content-Type": "application/json", "Accept": "application/json", "Connection": "close"}
        conn.request("POST", ep.prefix + path, body, {**sent, "User-Agent": f"oemkit-core/{__version__}", **headers})
        response = conn.getresponse()
        raw = response.read(MAX_ANSWER_BYTES + 1)
        retry_after = response.getheader("Retry-After")
        status = response.status
    except ssl.SSLCertVerificationError as exc:
        raise TransportError(f"TLS: {exc.verify_message or exc}", permanent=True) from None
    except (OSError, http.client.HTTPException) as exc:
        late = isinstance(exc, TimeoutError) or time.monotonic() >= deadline
        raise TransportError(f"no answer within {timeout:.0f} s" if late else describe(exc, ep.host)) from None
    finally:
        conn.close()
        for sock in opened:
            sock.close()
    return Answer(status, _json_object(raw), _seconds(retry_after))


def _left(deadline: float) -> float:
    """The seconds left until `deadline`; TimeoutError once there are none."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the request's deadline passed")
    return left


class _Bounded:
    """A connected socket, plain or TLS, as http.client uses it (sendall, makefile, close), every operation on it
    given only the time left until the request's deadline: a per-operation timeout alone restarts at each byte."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline = sock, deadline

    def sendall(self, data: bytes) -> None:
        view = memoryview(data).cast("B")
        while view:  # send, not sendall: an SSL socket's sendall gives each of its sends the whole timeout
            self.sock.settimeout(_left(self.deadline))
            view = view[self.sock.send(view) :]

    def recv_into(self, buffer: memoryview, nbytes: int = 0) -> int:
        self.sock.settimeout(_left(self.deadline))
        return self.sock.recv_into(buffer, nbytes)

    def makefile(self, mode: str = "rb", *args: object, **kwargs: object) -> io.BufferedReader:
        return io.BufferedReader(_Reader(self))

    def close(self) -> None:
        pass  # http.client closes a `Connection: close` connection before its answer is read: post() closes it


class _Reader(io.RawIOBase):
    def __init__(self, sock: _Bounded) -> None:
        self.sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        return self.sock.recv_into(buffer)


def describe(exc: BaseException, host: str) -> str:
    """A connection failure in a few words (never a traceback)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {host}"
    if isinstance(exc, ConnectionError):
        return "the connection was closed without an answer"
    if isinstance(exc, OSError):
        return f"TLS: {exc}" if type(exc).__module__ == "ssl" else str(exc.strerror or exc)
    return f"not an HTTP answer ({type(exc).__name__})"


def _json_object(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_ANSWER_BYTES:
        return {}
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _seconds(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None  # an HTTP date: the box's clock may be anything; the backoff decides
    return float(min(int(value.strip()), 86400))


def _printable(text: str, limit: int) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:limit])
