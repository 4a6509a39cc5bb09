"""The twin's way to a provisioning service: which phone-home URLs a twin can forward, the QEMU rule, and the
per-connection relay carrying real bytes both ways to a real socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from oemkit.errors import OemkitError
from oemkit.twin import qemu, relay, service
from oemkit.twin.spec import TwinNic


@pytest.mark.parametrize(
    ("url", "want"),
    [("https://10.0.2.100:8443", ("10.0.2.100", 8443)), ("https://10.0.2.50", ("10.0.2.50", 443)),
     ("http://10.0.2.7:80/oemkit", ("10.0.2.7", 80))],
)  # fmt: skip
def test_a_user_network_address_is_forwarded(url: str, want: tuple[str, int]) -> None:
    assert service.guest_address(url) == want


@pytest.mark.parametrize(
    "url",
    ["https://provision.example.com", "https://10.0.2.2:443", "https://10.0.2.15", "https://10.0.3.100",
     "https://192.168.1.10", "https://[fe80::1]:8443"],
)  # fmt: skip
def test_what_a_twin_cannot_forward_is_refused_with_the_rule(url: str) -> None:
    with pytest.raises(OemkitError, match=r"10\.0\.2\.0/24"):
        service.guestfwd(url, 8443)


def test_the_rule_goes_on_every_nic_restricted() -> None:
    rule = service.guestfwd("https://10.0.2.100:8443", 41234)
    assert rule == f"tcp:10.0.2.100:8443-cmd:{sys.executable} -m oemkit.twin.relay 127.0.0.1 41234"
    nics = (TwinNic("LOM1", "0000:04:00.0", "02:00:00:00:00:01", 1000),
            TwinNic("LOM2", "0000:04:00.1", "02:00:00:00:00:02", 1000))  # fmt: skip
    netdevs = [a for a in qemu.nic_args(nics, rule) if a.startswith("user,")]
    assert netdevs == [f"user,id=net{i},restrict=on,guestfwd={rule}" for i in range(2)]
    assert all("guestfwd" not in a for a in qemu.nic_args(nics))


def test_the_relay_carries_a_whole_exchange_both_ways() -> None:
    """An HTTP-like exchange: the box's request on stdin, the service's answer on stdout, both ends closed."""
    srv = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            data = b""
            while not data.endswith(b"\r\n\r\n"):
                data += conn.recv(4096)
            got.append(data)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + b"x" * 200_000)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    port = srv.getsockname()[1]
    done = subprocess.run([sys.executable, "-m", "oemkit.twin.relay", "127.0.0.1", str(port)],
                          input=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", capture_output=True, timeout=30)  # fmt: skip
    t.join(10)
    srv.close()
    assert done.returncode == 0
    assert got == [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]
    assert done.stdout.startswith(b"HTTP/1.1 200 OK") and len(done.stdout) == 38 + 5 + 200_000


def test_a_service_that_is_down_closes_the_box_connection() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    r, w = os.pipe()
    os.close(w)
    assert relay.relay("127.0.0.1", port, stdin=r, stdout=os.open(os.devnull, os.O_WRONLY)) == 1
    os.close(r)
