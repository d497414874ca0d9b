"""Reconnecting: the call in flight when a connection drops raises; the next call connects again."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import keypool


def test_a_connection_the_daemon_closed_while_idle_is_replaced_silently(start_daemon, pool: str) -> None:
    d = start_daemon("--idle-timeout", "200ms")
    c = keypool.Client(d.addr, pool=pool)
    [id] = c.gen(1)
    before = c.stats()["total_connections"]
    time.sleep(0.5)  # the daemon closes the idle connection
    assert c.ping(id)  # in pool `pool` again: USE was sent on the new connection
    assert c.stats()["total_connections"] == before + 1
    c.close()


def test_the_call_in_flight_raises_and_the_next_one_reconnects(start_daemon, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("tok-a team-a\n")
    d = start_daemon("--auth-tokens", str(tokens))
    c = keypool.Client(d.addr, pool="team-a", token="tok-a", timeout=2)
    c.gen(1)
    c.lease()
    failure = []

    def wait_for_a_key() -> None:
        try:
            c.lease(wait=10)
        except keypool.Error as e:
            failure.append(e)

    waiter = threading.Thread(target=wait_for_a_key)
    waiter.start()
    time.sleep(0.3)  # the lease is waiting in the daemon
    d.restart()  # a waiting request gets no reply: its connection is closed
    waiter.join(5)
    assert not waiter.is_alive()
    assert len(failure) == 1 and isinstance(failure[0], keypool.ConnectionError)
    # A new daemon, empty: the next call connects again, with AUTH and USE.
    ids = c.gen(2)
    assert c.stats("team-a")["keys"] == 2 and c.ping(ids[0])
    c.close()


def test_reconnecting_is_tried_once_per_call(start_daemon) -> None:
    d = start_daemon()
    c = keypool.Client(d.addr, timeout=1)
    assert c.ping()
    d.stop()
    started = time.monotonic()
    with pytest.raises(keypool.ConnectionError):
        c.ping()
    assert time.monotonic() - started < 2
    d.restart()
    assert c.ping()
    c.close()
