"""A test-only HTTP proxy in front of a mint that can hold back chosen answers.

    proxy = SlowProxy(mint.url).start()
    proxy.url                      # register this URL as the mint
    proxy.hold("/v1/swap", 10.0)   # from now on: forward, then sleep 10 s before answering
    proxy.answered.wait(30)        # set once the mint has answered a held request
    proxy.cut("/v1/swap", Cut.BEFORE)  # next request on the path: connection reset unsent
    proxy.cut("/v1/swap", Cut.AFTER)   # forwarded, the mint acts, then the connection is reset
    proxy.cut("/v1/swap", Cut.BAD_GATEWAY)  # a load balancer's 502, the mint never asked
    proxy.release()                # answer everything at once again
    proxy.stop()

The mint processes a held request at once; only its answer is late. Killing the client
while it waits reproduces "the mint did it, the answer was lost" with a real client. A cut
applies to `times` requests on its path (default one), then the path answers normally.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class Cut(Enum):
    BEFORE = "before"  # the connection is reset before the mint sees the request
    AFTER = "after"  # the mint handles the request; its answer is replaced by a reset
    BAD_GATEWAY = "502"  # the proxy answers 502 without asking the mint


class SlowProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.delays: dict[str, float] = {}
        self.cuts: dict[str, list[Cut]] = {}  # path -> the cuts still to make, in order
        self.cut_made: list[tuple[str, Cut]] = []  # every cut made so far
        self.answered = threading.Event()  # a held request was answered by the mint
        self.held: list[str] = []  # paths of the requests held so far
        self.seen: list[str] = []  # paths of every request forwarded
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._client = httpx.Client(timeout=30.0)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def hold(self, path: str, seconds: float) -> None:
        self.answered.clear()
        self.delays[path] = seconds

    def cut(self, path: str, how: Cut, times: int = 1) -> None:
        self.cuts.setdefault(path, []).extend([how] * times)

    def release(self) -> None:
        self.delays.clear()
        self.cuts.clear()

    def _next_cut(self, path: str) -> Cut | None:
        pending = self.cuts.get(path)
        if not pending:
            return None
        how = pending.pop(0)
        self.cut_made.append((path, how))
        return how

    def start(self) -> SlowProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                path = self.path.split("?", 1)[0]
                proxy.seen.append(path)
                delay = proxy.delays.get(path)
                cut = proxy._next_cut(path)
                if cut is Cut.BEFORE:
                    self._reset()
                    return
                if cut is Cut.BAD_GATEWAY:
                    self.send_error(502)
                    return
                try:
                    answer = proxy._client.request(
                        self.command, proxy.upstream + self.path, content=body, headers=headers
                    )
                except httpx.HTTPError:
                    self.send_error(502)
                    return
                if cut is Cut.AFTER:
                    self._reset()
                    return
                if delay:
                    proxy.held.append(path)
                    proxy.answered.set()
                    time.sleep(delay)
                with contextlib.suppress(OSError):  # the client may be dead by now
                    self.send_response(answer.status_code)
                    for key, value in answer.headers.items():
                        if key.lower() not in HOP_BY_HOP and key.lower() != "content-encoding":
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(answer.content)))
                    self.end_headers()
                    self.wfile.write(answer.content)

            def _reset(self) -> None:
                """Close with RST (SO_LINGER 0): the client sees a reset, not an answer."""
                with contextlib.suppress(OSError):
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                self.close_connection = True

            do_GET = do_POST = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.handle_error = lambda *args: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._client.close()
