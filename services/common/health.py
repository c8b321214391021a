"""Liveness and readiness probes over a tiny HTTP server (stdlib asyncio only).

`GET /health` answers 200 while the process runs. `GET /ready` runs every registered readiness
check (broker connected, database pool usable, ...) concurrently and answers 200 only when all
pass, otherwise 503 with a JSON body naming the failing checks. Start and stop it from the
FastStream lifespan hooks; port 0 disables it. The bodies carry check names only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[bool]]
"""A readiness check: true when the dependency is usable. Raising counts as failing."""

_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
_READ_TIMEOUT_S: Final = 5.0
_MAX_HEADER_LINES: Final = 100


class HealthServer:
    """HTTP liveness (`/health`) and readiness (`/ready`) endpoints on one port.

    Args:
        port: TCP port to listen on; 0 disables the server (`start` does nothing).
        checks: Readiness checks by name; more can be added with `add_check`.
        host: Interface to bind; set `0.0.0.0` where an orchestrator probes from outside.
        check_timeout: Seconds one check may take before it counts as failing.
    """

    def __init__(
        self,
        port: int,
        checks: Mapping[str, Check] | None = None,
        *,
        host: str = "127.0.0.1",
        check_timeout: float = 2.0,
    ) -> None:
        self.port = port
        self.host = host
        self.check_timeout = check_timeout
        self.checks: dict[str, Check] = dict(checks or {})
        self._server: asyncio.Server | None = None

    @property
    def enabled(self) -> bool:
        """Whether a port was configured."""
        return self.port != 0

    @property
    def bound_port(self) -> int | None:
        """The port actually listened on, or None when not running."""
        if self._server is None or not self._server.sockets:
            return None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def add_check(self, name: str, check: Check) -> None:
        """Register (or replace) a readiness check."""
        self.checks[name] = check

    async def start(self) -> None:
        """Start listening (no-op when disabled or already started)."""
        if not self.enabled or self._server is not None:
            return
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        log.info("health server listening", extra={"port": self.bound_port})

    async def stop(self) -> None:
        """Stop listening and close the server."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def failing_checks(self) -> list[str]:
        """Names of the readiness checks that fail now (raising or timing out is failing)."""
        names = list(self.checks)
        results = await asyncio.gather(
            *(self._run(name) for name in names), return_exceptions=False
        )
        return [name for name, ok in zip(names, results, strict=True) if not ok]

    async def _run(self, name: str) -> bool:
        try:
            async with asyncio.timeout(self.check_timeout):
                return bool(await self.checks[name]())
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            log.warning(
                "readiness check failed", extra={"check": name, "reason": type(exc).__name__}
            )
            return False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await self._respond(reader)
            reason = _REASONS.get(status, "")
            payload = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n"
                "Cache-Control: no-store\r\n"
                "Connection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, object]]:
        async with asyncio.timeout(_READ_TIMEOUT_S):
            request_line = (await reader.readline()).decode("latin-1").strip()
            for _ in range(_MAX_HEADER_LINES):
                if (await reader.readline()) in {b"\r\n", b"\n", b""}:
                    break
        parts = request_line.split()
        if len(parts) != 3:
            return 400, {"status": "bad request"}
        method, target, _version = parts
        path = target.split("?", 1)[0]
        if path not in {"/health", "/ready"}:
            return 404, {"status": "not found"}
        if method != "GET":
            return 405, {"status": "method not allowed"}
        if path == "/health":
            return 200, {"status": "ok"}
        failing = await self.failing_checks()
        if failing:
            return 503, {"status": "unavailable", "failing": failing}
        return 200, {"status": "ready"}
