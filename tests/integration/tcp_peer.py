"""A kernel-TCP peer for integration tests; runs inside the test's namespace.

Each connection starts with one command line:
  SINK            read until EOF, answer "<sha256hex> <count>\\n", close
  SOURCE N SEED   send N bytes of stream(SEED), then close (the peer closes first)
  BULK N SEED     generate N bytes of stream(SEED), answer "READY\\n", send them, close:
                  benchmarks start their clock at READY (generating the stream in
                  Python, ~350 MB/s, would otherwise cap what they measure)
  ECHO            echo until EOF, then close
  HOLD            read until EOF, then close (the client closes first)
  RST             abort at once with a RST (SO_LINGER 0)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import socket
import socketserver
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # this file also runs alone inside the namespace, without netstack
    from netstack.stack import Stream

CHUNK = 1 << 20
#: What BULK sends once its data is ready, before the data.
READY = b"READY\n"


def receive_all(s: Stream, timeout: float) -> tuple[str, int]:
    """Read ``s`` (our stack's stream) to EOF: (sha256 hex, byte count); ``timeout`` per
    read."""
    h = hashlib.sha256()
    n = 0
    while True:
        data = s.recv_some(timeout)
        if not data:
            return h.hexdigest(), n
        h.update(data)
        n += len(data)


def stream(seed: int, n: int) -> Iterator[bytes]:
    """The deterministic byte stream both sides can regenerate."""
    rng = random.Random(seed)
    left = n
    while left > 0:
        k = min(CHUNK, left)
        yield rng.randbytes(k)
        left -= k


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        words = self.rfile.readline().decode().split()
        if not words:
            return
        cmd = words[0]
        if cmd == "SINK":
            h = hashlib.sha256()
            count = 0
            while True:
                data = self.rfile.read1(CHUNK)
                if not data:
                    break
                h.update(data)
                count += len(data)
            sock.sendall(f"{h.hexdigest()} {count}\n".encode())
        elif cmd == "SOURCE":
            for chunk in stream(int(words[2]), int(words[1])):
                sock.sendall(chunk)
        elif cmd == "BULK":
            chunks = list(stream(int(words[2]), int(words[1])))
            sock.sendall(READY)
            for chunk in chunks:
                sock.sendall(chunk)
        elif cmd == "ECHO":
            while True:
                data = self.rfile.read1(CHUNK)
                if not data:
                    break
                sock.sendall(data)
        elif cmd == "HOLD":
            while self.rfile.read1(CHUNK):
                pass
        elif cmd == "RST":
            # Close the descriptor here: socketserver would shutdown(SHUT_WR) first and
            # send a FIN before the RST.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            os.close(sock.detach())


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class Server6(Server):
    address_family = socket.AF_INET6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=5001)
    ap.add_argument("--rcvbuf", type=int, default=0)
    ap.add_argument("--bind", default="0.0.0.0", help="address (IPv6 too, e.g. ::)")
    args = ap.parse_args()
    server: type[Server] = Server6 if ":" in args.bind else Server
    with server((args.bind, args.port), Handler) as srv:
        srv.serve_forever()


if __name__ == "__main__":
    main()
