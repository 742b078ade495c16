"""A minimal HTTP/1.1 JSON client on the standard library (http.client): one request per connection, and a streamed
POST whose server-sent events are read line by line and which another thread may cut off at any moment.

Why not a client library: the kernel's install set has none (httpx and aiohttp are not dependencies), and what the
remote engine needs is small: GET/POST JSON with a timeout, and a stream it can cancel from the kernel thread. A cancel
shuts the socket down, which wakes the reading thread at once and tells the server the client is gone (llama.cpp,
vLLM and SGLang all stop generating for a closed connection).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit


class HTTPFailure(Exception):
    """The server could not be reached, broke the connection, or answered with an error status."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status  # None: no HTTP answer at all (refused, reset, timed out, cut mid-stream)


class Endpoint:
    """A server's base URL (http://host:port/v1) and the paths under it or under its root."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected an http://HOST:PORT/PATH URL, got {url!r}")
        self.url = url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.base_path = parts.path.rstrip("/")  # "/v1"

    def connection(self, timeout_s: float) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)

    def request_json(self, method: str, path: str, body: dict | None = None, timeout_s: float = 5.0):
        """path is absolute on the server ("/health", "/v1/models"). Returns the decoded JSON body."""
        conn = self.connection(timeout_s)
        try:
            payload = None if body is None else json.dumps(body).encode()
            conn.request(method, path, payload, {"Content-Type": "application/json"} if payload else {})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as error:
            raise HTTPFailure(f"{method} {self.url_of(path)}: {error or type(error).__name__}") from None
        finally:
            conn.close()
        if resp.status >= 400:
            raise HTTPFailure(f"{method} {self.url_of(path)}: HTTP {resp.status} {_error_text(data)}", resp.status)
        try:
            return json.loads(data) if data else None
        except ValueError:
            raise HTTPFailure(f"{method} {self.url_of(path)}: not JSON: {data[:80]!r}", resp.status) from None

    def url_of(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"


class EventStream:
    """One streamed POST. open() then iterate events() on one thread; cancel() from any thread."""

    def __init__(self, endpoint: Endpoint, path: str, body: dict, read_timeout_s: float):
        self._endpoint = endpoint
        self._path = path
        self._body = json.dumps(body).encode()
        self._read_timeout_s = read_timeout_s
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self.cancelled = False

    def events(self) -> Iterator[dict]:
        """Each `data:` payload, decoded, until [DONE] or the end of the body. HTTPFailure on any transport fault or
        error status (after a cancel: returns quietly)."""
        with self._lock:
            if self.cancelled:
                return
            self._conn = self._endpoint.connection(self._read_timeout_s)
        try:
            self._conn.request(
                "POST", self._path, self._body, {"Content-Type": "application/json", "Accept": "text/event-stream"}
            )
            resp = self._conn.getresponse()
            if resp.status >= 400:
                raise HTTPFailure(
                    f"POST {self._endpoint.url_of(self._path)}: HTTP {resp.status} {_error_text(resp.read())}",
                    resp.status,
                )
            while True:
                line = resp.readline()
                # a cancel that came while the socket was being opened could not shut it down: it is seen here
                if not line or self.cancelled:
                    return
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue  # blank separators, comments (": ping"), event names
                data = line[5:].strip()
                if data == b"[DONE]":
                    return
                try:
                    yield json.loads(data)
                except ValueError:
                    raise HTTPFailure(f"{self._endpoint.url} sent a malformed event: {data[:80]!r}") from None
        except (OSError, http.client.HTTPException) as error:
            if not self.cancelled:
                raise HTTPFailure(f"{self._endpoint.url}: {error or type(error).__name__}") from None
        finally:
            self._close()

    def cancel(self) -> None:
        """Stop the stream: the reading thread's next (or current, blocked) read ends."""
        with self._lock:
            self.cancelled = True
            conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed

    def _close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _error_text(data: bytes) -> str:
    """The message of an OpenAI-shaped error body, else the body's start."""
    try:
        body = json.loads(data)
        error = body.get("error", body) if isinstance(body, dict) else body
        message = error.get("message") if isinstance(error, dict) else error
        return str(message)[:200]
    except ValueError:
        return data[:200].decode(errors="replace")
