"""The factory's HTTP call to the provisioning service (oemkit/registration.py) against servers that misbehave in
ways the real service never does: a redirect (which must not carry the admin token anywhere), an answer that is
not HTTP, and http:// to another host (the admin token never crosses a network in clear)."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from oemkit import registration

ADMIN = "the-admin-token-under-test"


def _serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


seen: list[str] = []


class _Target(http.server.BaseHTTPRequestHandler):
    """Where a redirect points: records any Authorization it is given, answers 200 as if all were well."""

    def do_GET(self) -> None:
        seen.append(self.headers.get("Authorization", ""))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def target() -> Iterator[int]:
    seen.clear()
    yield from _serve(_Target)


def test_a_redirect_is_not_followed_and_carries_no_token(target: int) -> None:
    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{target}/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    for port in _serve(Redirect):
        with pytest.raises(registration.ServiceError, match=r"redirect \(302\): not followed"):
            registration.post(f"http://127.0.0.1:{port}", "/v1/units", {"serial": "J30X"}, ADMIN, None)
    assert seen == []  # the target never heard from us, token or not


def test_an_answer_that_is_not_http_is_a_service_error_not_a_traceback() -> None:
    srv = socket.create_server(("127.0.0.1", 0))

    def garbage() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"garbage\r\n\r\n")

    threading.Thread(target=garbage, daemon=True).start()
    port = srv.getsockname()[1]
    try:
        with pytest.raises(registration.ServiceError, match="cannot reach the provisioning service"):
            registration.post(f"http://127.0.0.1:{port}", "/v1/units", {}, ADMIN, None)
    finally:
        srv.close()


@pytest.mark.parametrize("url", ["http://prov.example.com", "http://10.0.0.5:8080", "ftp://127.0.0.1"])
def test_the_admin_token_never_goes_in_clear_over_a_network(url: str) -> None:
    with pytest.raises(registration.ServiceError) as err:
        registration.post(url, "/v1/units", {}, ADMIN, None)
    assert ADMIN not in str(err.value)


def test_post_hands_back_a_stray_200_as_it_came(target: int) -> None:
    """post() only transports; register() is what refuses a 200 that does not name the unit (not covered here: it
    needs a built image, and the real service always names it — tests/test_register.py)."""
    status, answer = registration.post(f"http://127.0.0.1:{target}", "/v1/units", {}, ADMIN, None)
    assert (status, answer) == (200, {})
