"""A call application for the tests: an HTTP server on 127.0.0.1 that checks every request's
webhook signature (`control.contracts.signing`) and answers through a plain function."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from control.contracts.signing import verification_failure

# (method, path with query, body, signed correctly?) -> (status, JSON reply body or b"")
Handle = Callable[[str, str, bytes, bool], tuple[int, bytes]]


class Signatures:
    """How many requests arrived without a valid signature."""

    def __init__(self) -> None:
        self.bad = 0


@contextmanager
def signed_http_server(handle: Handle, secrets: dict[str, str]
                       ) -> Iterator[tuple[str, Signatures]]:
    """Serve `handle` on a free port; yields the base URL and the signature counter."""
    signatures = Signatures()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self, body: bytes) -> None:
            signed = verification_failure(body, dict(self.headers.items()), secrets=secrets,
                                          now=time.time()) is None
            if not signed:
                signatures.bad += 1
            status, data = handle(self.command, self.path, body, signed)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up (a timeout under test)

        def do_GET(self) -> None:
            self._serve(b"")

        def do_POST(self) -> None:
            self._serve(self.rfile.read(int(self.headers["Content-Length"])))

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", signatures
    finally:
        server.shutdown()
        server.server_close()


__all__ = ["Handle", "Signatures", "signed_http_server"]
