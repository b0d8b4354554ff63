"""Test helpers: a loopback TCP relay that can cut every connection through it on demand.

Point a client at ``proxy.endpoint`` instead of the server's endpoint, then call
``proxy.drop_connections()`` to tear down the TCP connections mid-call, as a network failure
would; new connections are accepted again at once. It is how the conformance example proves
that ``watch_job`` resumes after a real connection loss.
"""

from __future__ import annotations

import socket
import struct
import threading
from types import TracebackType

from aiprod._client import parse_endpoint

__all__ = ["DropProxy"]


class DropProxy:
    """A TCP relay on 127.0.0.1 to ``endpoint`` (``http://host:port`` or ``host:port``)."""

    def __init__(self, endpoint: str) -> None:
        target, _ = parse_endpoint(endpoint, tls=False)
        host, port = target.rsplit(":", 1)
        self._upstream = (host.strip("[]"), int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closed = False
        self.drops = 0
        self.accepted = 0
        """How many client connections the relay has accepted (a reconnect adds one)."""
        threading.Thread(target=self._accept, name="aiprod-drop-proxy", daemon=True).start()

    @property
    def endpoint(self) -> str:
        """The relay's endpoint, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def drop_connections(self) -> int:
        """Cuts every open connection (both sides, with a TCP reset); returns how many pairs."""
        with self._lock:
            socks = list(self._sockets)
            self._sockets.clear()
            self.drops += 1
        for s in socks:
            _reset(s)
        return len(socks) // 2

    def close(self) -> None:
        """Stops accepting and cuts every connection."""
        self._closed = True
        self.drop_connections()
        self._listener.close()

    def __enter__(self) -> DropProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._upstream)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._sockets.update((client, upstream))
                self.accepted += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.discard(src)
                self._sockets.discard(dst)
            _reset(src)
            _reset(dst)


def _reset(s: socket.socket) -> None:
    try:
        # SO_LINGER 0: close() sends RST, like a crashed peer or a dropped network path.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        s.shutdown(socket.SHUT_RD)  # wakes a thread blocked in recv without sending a FIN
    except OSError:
        pass
    s.close()
