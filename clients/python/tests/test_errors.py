"""Every error class, each caused for real: by the daemon, by a fake daemon, or by the network."""

from __future__ import annotations

import socket
import threading
import time
from typing import Iterator, List

import pytest

import keypool
from conftest import free_port


def test_client_error_carries_the_daemons_message(client: keypool.Client) -> None:
    with pytest.raises(keypool.ClientError, match="wait is longer than the maximum, 5m"):
        client.lease(wait=600)
    with pytest.raises(keypool.ClientError, match="GEN count"):
        client.gen(0)
    with pytest.raises(keypool.ClientError, match="malformed key id"):
        client.ping("short")
    assert client.ping()  # the connection stays usable


def test_server_error_when_the_pool_is_full(client: keypool.Client) -> None:
    with pytest.raises(keypool.ServerError, match="pool full"):
        client.gen(1001)  # the shared daemon runs with --max-keys 1000


def test_arguments_that_cannot_go_on_one_line_are_refused_before_sending(client: keypool.Client) -> None:
    for secret in ["has space", "line\r\nGEN 5", "", "caf\u00e9"]:
        with pytest.raises(ValueError) as raised:
            client.add(secret)
        assert secret not in str(raised.value) or not secret
    with pytest.raises(ValueError):
        client.lease(wait=-1)
    with pytest.raises(TypeError):
        client.lease(wait="5s")  # type: ignore[arg-type]
    assert client.stats()["keys"] >= 0


def test_every_error_is_a_keypool_error() -> None:
    for cls in (keypool.ClientError, keypool.ServerError, keypool.AuthError, keypool.ProtocolError,
                keypool.ConnectionError, keypool.NoKeyAvailable):
        assert issubclass(cls, keypool.Error)
    assert issubclass(keypool.ConnectionError, ConnectionError)


def test_connection_error_when_nobody_listens() -> None:
    with pytest.raises(keypool.ConnectionError, match="cannot connect"):
        keypool.Client(f"127.0.0.1:{free_port()}", timeout=1).ping()


@pytest.fixture
def fake_daemon() -> Iterator[tuple]:
    """A listener that answers every line with the next canned reply (or nothing once they run out)."""
    listener = socket.create_server(("127.0.0.1", 0))
    replies: List[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(0.1)
                while not stop.is_set():
                    try:
                        data = conn.recv(4096)
                    except socket.timeout:
                        continue
                    if not data:
                        break
                    for _ in range(data.count(b"\n")):
                        if replies:
                            conn.sendall(replies.pop(0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}", replies
    stop.set()
    thread.join(2)
    listener.close()


def test_protocol_error_for_a_reply_the_client_does_not_understand(fake_daemon) -> None:
    addr, replies = fake_daemon
    replies += [b"WHAT IS THIS\r\n", b"VERSION 9.9.9\r\n"]
    c = keypool.Client(addr, timeout=2)
    with pytest.raises(keypool.ProtocolError, match="WHAT IS THIS"):
        c.version()
    assert c.version() == "9.9.9"  # on a new connection


def test_protocol_error_never_shows_a_secret(fake_daemon) -> None:
    addr, replies = fake_daemon
    replies.append(b"LEASED abcdefghijklmnopqrstuvwx notanumber sk-very-secret\r\n")
    with pytest.raises(keypool.ProtocolError) as raised:
        keypool.Client(addr, timeout=2).lease()
    assert "sk-very-secret" not in str(raised.value)


def test_a_reply_that_never_comes_is_a_bounded_connection_error(fake_daemon) -> None:
    addr, _ = fake_daemon  # no replies at all
    started = time.monotonic()
    with pytest.raises(keypool.ConnectionError, match="timed out"):
        keypool.Client(addr, timeout=0.3).ping()
    assert time.monotonic() - started < 2


def test_no_key_available_from_leased(client: keypool.Client) -> None:
    with pytest.raises(keypool.NoKeyAvailable):
        with client.leased(wait=0.1):
            pytest.fail("entered without a key")
