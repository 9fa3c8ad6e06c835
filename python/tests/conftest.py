"""Fixtures of the plugin's own suite: a real upstream (http.server on a
free port, in a thread) and an inner project (pytester) whose ouli config
points at it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator, List

import pytest

pytest_plugins = ["pytester"]


class Upstream:
    """A JSON API: every answer names the request and counts it."""

    def __init__(self) -> None:
        self.hits: List[str] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                upstream.hits.append(f"{self.command} {self.path}")
                answer = json.dumps(
                    {"method": self.command, "path": self.path, "body": body, "n": len(upstream.hits)}
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Gone for good: the port refuses connections from now on."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    if server.thread.is_alive():
        server.stop()


def write_config(pytester: pytest.Pytester, upstream: Upstream, source_port: int = 0, source_type: str = "http") -> None:
    pytester.makefile(
        ".yaml",
        ouli=f"""
endpoints:
  - target_host: 127.0.0.1
    target_port: {upstream.port}
    target_type: http
    source_type: {source_type}
    source_port: {source_port}
""",
    )


@pytest.fixture
def project(pytester: pytest.Pytester, upstream: Upstream) -> pytest.Pytester:
    """An inner project: ouli.yaml (free ports) against `upstream`."""
    write_config(pytester, upstream)
    return pytester
