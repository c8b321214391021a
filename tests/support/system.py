"""Run Rekisteri services as real processes for end-to-end and reliability tests.

Each service runs as `python -m services.<name>` with only its own environment (from
`.rekisteri/env`), its own consumer-group suffix (so a test never disturbs, or is disturbed
by, another consumer of the shared topics), and a health port probed for readiness. A test can
`kill -9` a service and start it again, as an operator's crash would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.support.infra import REPO_ROOT, Infra


def free_port() -> int:
    """A TCP port nothing uses right now, below the kernel's ephemeral range.

    A port the kernel hands out (bind to 0) is an ephemeral port: by the time a restarted
    service binds it again, an outgoing Kafka or Postgres connection may be using it. Ports
    20000-29999 are never given to outgoing connections (Linux: 32768 and up).
    """
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-29999")


@dataclass
class ServiceProcess:
    """One service process, restartable."""

    name: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = field(default_factory=free_port)
    starts: int = 0
    _log: IO[bytes] | None = None

    def start(self) -> None:
        """Start the process (appending to its log)."""
        self._log = self.log_path.open("ab")
        env = self.env | {f"{self.name.upper()}_HEALTH_PORT": str(self.port)}
        self.proc = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
            [sys.executable, "-m", f"services.{self.name}"],
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.starts += 1

    def ready(self) -> bool:
        """Whether `/ready` answers 200."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}/ready", timeout=1
            ) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    async def wait_ready(self, within: float = 60.0) -> None:
        """Wait until ready; fail with the log's tail when the process dies or times out."""
        deadline = time.monotonic() + within
        while not self.ready():
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready in {within} s:\n{self.tail()}")
            await asyncio.sleep(0.2)

    def kill9(self) -> None:
        """SIGKILL the process: no shutdown hooks, no final commits."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._close_log()

    def stop(self) -> None:
        """SIGTERM and wait (then SIGKILL after 20 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._close_log()

    def alive(self) -> bool:
        """Whether the process is running."""
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        """The last lines of the log (JSON lines; no personal data by design)."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text("utf-8", "replace").splitlines()[-lines:])
        return ""

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class System:
    """A set of service processes sharing one run id (their consumer-group suffix)."""

    infra: Infra
    run: str
    log_dir: Path
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    def add(self, name: str, **overrides: str) -> ServiceProcess:
        """Configure a service with its own credentials and this run's group suffix."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(name.upper() + "_")}
        env = (
            base
            | self.infra.service_env(name)
            | {
                f"{name.upper()}_CONSUMER_GROUP_SUFFIX": self.run,
                f"{name.upper()}_ENVIRONMENT": "test",
            }
            | overrides
        )
        proc = ServiceProcess(name, env, self.log_dir / f"{name}.log")
        self.services[name] = proc
        return proc

    def __getitem__(self, name: str) -> ServiceProcess:
        return self.services[name]

    async def start_all(self) -> None:
        """Start every configured service and wait until all are ready."""
        for svc in self.services.values():
            svc.start()
        for svc in self.services.values():
            await svc.wait_ready()

    def stop_all(self) -> None:
        """Stop every service."""
        for svc in self.services.values():
            svc.stop()
