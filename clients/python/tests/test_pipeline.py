"""Client.pipeline(): one write, answers in order, errors in their place."""

from __future__ import annotations

import socket

import pytest

import keypool


def test_pipeline_sends_one_write_and_answers_in_order(
    client: keypool.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    [id] = client.gen(1)
    client.ping()  # a connection is open already, so the count below is the pipeline's alone
    writes = []
    real_sendall = socket.socket.sendall

    def counting_sendall(self: socket.socket, data: bytes, *args: int) -> None:
        writes.append(bytes(data))
        real_sendall(self, data, *args)

    monkeypatch.setattr(socket.socket, "sendall", counting_sendall)
    with client.pipeline() as p:
        p.lease()
        p.ping(id)
        p.info(id)
        p.gen(2)
        p.add("sk-piped")
        p.get()
        p.touch(id)
        p.release(id)
        p.delete(id)
        p.stats()
        p.version()
        p.ping()
        assert len(p) == 12 and p.results == []
    monkeypatch.undo()
    assert len(writes) == 1 and writes[0].count(b"\r\n") == 12
    lease, alive, info, ids, added, got, touched, released, deleted, stats, version, pong = p.results
    assert lease.id == id and alive and info["state"] == "blocked" and info["token"] == lease.token
    assert len(ids) == 2 and len(added) == 24 and got is not None
    assert touched and released and deleted
    assert stats["version"] == version and pong


def test_a_pipeline_left_by_an_exception_sends_nothing(client: keypool.Client, pool: str) -> None:
    with pytest.raises(KeyError):
        with client.pipeline() as p:
            p.gen(5)
            raise KeyError("stop")
    assert client.stats(pool)["keys"] == 0


def test_errors_take_their_place_and_the_first_is_raised(client: keypool.Client, pool: str) -> None:
    with pytest.raises(keypool.ClientError, match="GEN count"):
        with client.pipeline() as p:
            p.gen(0)
            p.gen(2)
    assert isinstance(p.results[0], keypool.ClientError) and len(p.results[1]) == 2
    with client.pipeline(raise_on_error=False) as p:
        p.gen(1)
        p.lease(wait=600)
        p.version()
    assert isinstance(p.results[1], keypool.ClientError) and p.results[2] == client.version()


def test_a_waiting_request_in_a_pipeline_gets_its_wait_added_to_the_timeout(daemon, pool: str) -> None:
    c = keypool.Client(daemon.addr, pool=pool, timeout=0.3)
    with c.pipeline() as p:
        p.lease(wait=0.6)  # longer than the timeout alone
        p.ping()
    assert p.results == [None, True]
    assert c.pipeline().execute() == []  # an empty pipeline sends nothing
