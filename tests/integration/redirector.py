"""A one-trick iSCSI portal for tests: every login is answered with a redirection.

Runs inside a namespace (kernel TCP) and answers each Login Request with status
class 1 (redirection, RFC 7143 §11.13.5: detail 1 "moved temporarily", 2 "moved
permanently") and ``TargetAddress=<to>``, then closes the connection.

Usage: ``python redirector.py LISTEN_ADDR PORT TARGET_ADDRESS [permanent]``.
"""

from __future__ import annotations

import socket
import sys

from bootinit.iscsi.keys import encode_text
from bootinit.iscsi.pdu import LoginRequest, LoginResponse, decode, encode_bytes, peek_lengths


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def main() -> None:
    host, port, to = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    detail = 2 if len(sys.argv) > 4 and sys.argv[4] == "permanent" else 1
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((host, port))
        srv.listen()
        while True:
            conn, _ = srv.accept()
            with conn:
                try:
                    bhs = recv_exact(conn, 48)
                    _op, ahs_len, data_len = peek_lengths(bhs)
                    rest = recv_exact(conn, ahs_len + ((data_len + 3) & ~3))
                    req = decode(bhs, rest[:ahs_len], rest[ahs_len:ahs_len + data_len])
                except (EOFError, OSError, ValueError):
                    continue
                if not isinstance(req, LoginRequest):
                    continue
                conn.sendall(encode_bytes(LoginResponse(
                    itt=req.itt, isid=req.isid, status_class=1, status_detail=detail,
                    data=encode_text([("TargetAddress", to)]))))


if __name__ == "__main__":
    main()
