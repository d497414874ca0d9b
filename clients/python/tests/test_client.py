"""keypool.Client against the real daemon: every method, the Lease value, and the connection pool."""

from __future__ import annotations

import datetime
import threading
import time

import pytest

import keypool


def test_gen_mints_the_number_of_keys_asked_for(client: keypool.Client, pool: str) -> None:
    ids = client.gen(3)
    assert len(ids) == 3 and len(set(ids)) == 3
    assert all(len(i) == 24 and i.isalnum() for i in ids)
    assert client.gen() != []
    assert client.stats(pool)["keys"] == 4


def test_add_returns_the_id_and_the_existing_one_for_a_known_secret(client: keypool.Client) -> None:
    first = client.add("sk-live-abc")
    assert client.add("sk-live-abc") == first
    assert client.add("sk-live-def", keepalive=0) != first
    assert "alive_until_ms" not in client.info(client.add("sk-live-def"))  # keepalive 0: never expires


def test_get_leases_without_a_token_and_carries_the_secret(client: keypool.Client) -> None:
    id = client.add("sk-secret-1")
    lease = client.get()
    assert lease == keypool.Lease(id, None, "sk-secret-1")
    assert str(lease) == "sk-secret-1"
    assert client.get() is None  # the only key is blocked
    assert client.info(id)["state"] == "blocked"


def test_get_waits_and_takes_a_block_window(client: keypool.Client) -> None:
    started = time.monotonic()
    assert client.get(wait=0.2) is None
    assert 0.15 < time.monotonic() - started < 2
    [id] = client.gen(1)
    lease = client.get(block=5)
    info = client.info(id)
    assert lease.id == id and info["blocked_until_ms"] - info["created_ms"] > 3000


def test_lease_carries_a_growing_token_and_honours_wait_and_block(client: keypool.Client) -> None:
    [id] = client.gen(1)
    first = client.lease()
    assert first.id == id and isinstance(first.token, int) and first.secret is None
    assert str(first) == id
    assert client.lease(wait=0.1) is None
    assert client.release(first)
    second = client.lease(wait=datetime.timedelta(seconds=1), block=0.25)
    assert second.token > first.token
    time.sleep(0.5)  # past the 250 ms block window asked for
    assert client.info(id)["state"] == "free"


def test_release_and_touch_answer_false_for_a_stale_or_unblocked_lease(client: keypool.Client) -> None:
    [id] = client.gen(1)
    lease = client.lease()
    assert client.touch(lease)
    assert client.touch(lease, duration=2.5)
    info = client.info(id)
    assert info["token"] == lease.token
    assert client.release(lease)
    assert not client.release(lease)  # STALE
    assert not client.touch(lease)  # STALE
    assert not client.release(id)  # NOT_BLOCKED
    assert not client.touch(id)  # NOT_BLOCKED
    client.delete(id)
    assert not client.release(id)  # NOT_FOUND
    assert not client.touch(id)  # NOT_FOUND


def test_release_with_a_delay_rests_the_key(client: keypool.Client) -> None:
    [id] = client.gen(1)
    client.lease()
    assert client.release(id, delay=0.3)
    assert client.info(id)["state"] == "delayed"
    assert client.get() is None
    assert client.get(wait=2) is not None  # handed out when the delay ends


def test_delete_and_ping_answer_false_for_a_missing_key(client: keypool.Client) -> None:
    [id] = client.gen(1)
    assert client.ping(id)
    assert client.ping()  # the health check
    assert client.delete(id)
    assert not client.delete(id)
    assert not client.ping(id)
    assert client.info(id) is None


def test_info_and_stats_give_integers_as_int(client: keypool.Client, pool: str) -> None:
    [id] = client.gen(1)
    info = client.info(id)
    assert info["id"] == id and info["state"] == "free" and info["leases"] == 0
    assert isinstance(info["created_ms"], int)
    stats = client.stats()
    assert stats["block_timeout_ms"] == 1000 and isinstance(stats["pid"], int)
    assert stats["version"] == client.version()
    assert client.stats(pool) == {**client.stats(pool), "pool": pool, "keys": 1}
    assert client.block_timeout() == 1.0


def test_version_is_the_daemons(client: keypool.Client) -> None:
    version = client.version()
    assert version.count(".") == 2 and version == client.stats()["version"]


def test_lease_is_an_immutable_value_whose_repr_hides_the_secret() -> None:
    lease = keypool.Lease("a" * 24, 7, "sk-hidden")
    assert (lease.id, lease.token, lease.secret) == ("a" * 24, 7, "sk-hidden")
    assert "sk-hidden" not in repr(lease)
    assert hash(lease) == hash(keypool.Lease("a" * 24, 7, "sk-hidden"))
    with pytest.raises(AttributeError):
        lease.token = 8  # type: ignore[misc]


def test_the_client_is_a_context_manager_and_refuses_calls_once_closed(daemon) -> None:
    with keypool.Client(daemon.addr) as c:
        assert c.ping()
    with pytest.raises(keypool.ConnectionError):
        c.ping()


def test_the_address_defaults_to_keypool_addr(daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYPOOL_ADDR", daemon.addr)
    with keypool.Client() as c:
        assert c.ping() and c.address == ("127.0.0.1", daemon.port)
    monkeypatch.delenv("KEYPOOL_ADDR")
    assert keypool.Client().address == ("127.0.0.1", 7171)


def test_a_waiting_lease_never_holds_up_another_threads_request(client: keypool.Client) -> None:
    """One connection per request in flight: REL and GEN go through while another thread waits."""
    got = []
    waiter = threading.Thread(target=lambda: got.append(client.lease(wait=3)))
    waiter.start()
    time.sleep(0.2)  # the waiter is now parked in the daemon
    started = time.monotonic()
    assert client.ping()
    [id] = client.gen(1)  # ... which the waiter is handed at once
    assert time.monotonic() - started < 1
    waiter.join(5)
    assert not waiter.is_alive() and got[0].id == id


def test_threads_sharing_a_client_each_get_their_own_lease(client: keypool.Client) -> None:
    client.gen(8)
    leases = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(20):
            lease = client.lease(wait=2)
            with lock:
                leases.append(lease)
            assert client.release(lease)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(leases) == 160 and len({lease.token for lease in leases}) == 160
    assert len(client._idle) <= client.max_idle


def test_idle_connections_are_reused(client: keypool.Client, pool: str) -> None:
    client.ping()
    before = client.stats()["total_connections"]
    for _ in range(20):
        client.ping()
    assert client.stats()["total_connections"] == before


def test_a_block_reply_larger_than_one_read_is_read_whole(start_daemon) -> None:
    d = start_daemon()
    with keypool.Client(d.addr) as c:
        ids = c.gen(10000)  # about 310 KB of KEY lines: many reads
        assert len(set(ids)) == 10000
        with c.pipeline() as p:
            for id in ids[:500]:
                p.ping(id)
        assert p.results == [True] * 500
        assert c.stats()["keys"] == 10000
