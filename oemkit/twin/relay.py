"""One forwarded connection of a twin to a service on this host: QEMU's user networking runs this per connection
the box opens to its phone-home address (`guestfwd=...-cmd:`), with the connection on stdin/stdout, and we carry it
to HOST:PORT. A chardev forward would serve one connection and then hang (NOTES-uefi.md); a process per
connection serves the enrolment and every report. Standard library only; ends when either side closes."""

from __future__ import annotations

import os
import selectors
import socket
import sys

CHUNK = 64 << 10
CONNECT_TIMEOUT_S = 10


def relay(host: str, port: int, stdin: int = 0, stdout: int = 1) -> int:
    try:
        conn = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    except OSError as exc:
        print(f"oemkit relay: cannot reach {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1  # QEMU closes the box's connection: the box sees it refused, as with the service down
    conn.settimeout(None)
    sel = selectors.DefaultSelector()
    sel.register(stdin, selectors.EVENT_READ, "in")
    sel.register(conn, selectors.EVENT_READ, "net")
    open_ends = 2
    while open_ends:
        for key, _ in sel.select():
            if key.data == "in":
                data = os.read(stdin, CHUNK)
                if not data:  # the box closed its side: tell the service, keep reading its answer
                    sel.unregister(stdin)
                    conn.shutdown(socket.SHUT_WR)
                    open_ends -= 1
                else:
                    conn.sendall(data)
            else:
                data = conn.recv(CHUNK)
                if not data:
                    sel.unregister(conn)
                    open_ends -= 1
                    os.close(stdout)
                    open_ends = 0  # the service closed: the exchange is over
                else:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(stdout, view) :]
    conn.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[1].isdigit():
        print("usage: python -m oemkit.twin.relay HOST PORT", file=sys.stderr)
        return 2
    return relay(args[0], int(args[1]))


if __name__ == "__main__":
    sys.exit(main())
