"""Fixtures that run the real daemon: the built ``keypool`` binary on a free port of 127.0.0.1.

The binary is ``target/debug/keypool`` at the repository's root unless $KEYPOOL_BIN names another. Each
test gets its own pool on the shared daemon (so tests do not see each other's keys); tests that need
other flags start their own daemon with ``start_daemon``, which stops it (by its pid) afterwards.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_ROOT.parents[1]
# The tests exercise the source tree, not whatever keypool may be installed.
sys.path.insert(0, str(PACKAGE_ROOT))

import keypool  # noqa: E402

BINARY = Path(os.environ.get("KEYPOOL_BIN") or REPO_ROOT / "target" / "debug" / "keypool")
# Short windows keep time-based tests to a second or two.
SHARED_FLAGS = ["--block-timeout", "1s", "--keepalive-timeout", "30s", "--max-keys", "1000"]


def free_port() -> int:
    """A port nobody listens on right now (the daemon binds it a moment later; a clash is retried)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """One keypool process listening on 127.0.0.1."""

    def __init__(self, flags: List[str], tmp_dir: Path) -> None:
        self.flags = flags
        self.port = free_port()
        self.log_path = tmp_dir / f"keypool-{uuid.uuid4().hex[:8]}.log"
        self.process: Optional[subprocess.Popen] = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Daemon":
        if not BINARY.exists():
            pytest.fail(f"no keypool binary at {BINARY}: run `cargo build` or set KEYPOOL_BIN")
        for attempt in range(3):
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [str(BINARY), "--listen", self.addr, *self.flags], stdout=log, stderr=log
                )
            if self._wait_until_listening():
                return self
            self.port = free_port()  # someone took the port in between: try another
        pytest.fail(f"keypool did not start: {self.log_path.read_text()}")

    def _wait_until_listening(self) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.02)
        self.stop()
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def restart(self) -> None:
        """Stops the daemon and starts a new one (no keys: the daemon keeps none across restarts) on the
        same port."""
        self.stop()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([str(BINARY), "--listen", self.addr, *self.flags], stdout=log, stderr=log)
        assert self._wait_until_listening(), self.log_path.read_text()


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(SHARED_FLAGS, tmp_path_factory.mktemp("daemon")).start()
    yield d
    d.stop()


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: List[Daemon] = []

    def start(*flags: str) -> Daemon:
        d = Daemon(list(flags), tmp_path).start()
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


@pytest.fixture
def pool() -> str:
    """A pool of the test's own."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(daemon: Daemon, pool: str) -> Iterator[keypool.Client]:
    c = keypool.Client(daemon.addr, pool=pool, timeout=5.0)
    yield c
    c.close()
