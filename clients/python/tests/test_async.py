"""keypool.AsyncClient: the same surface as coroutines, each test an asyncio.run of its own."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

import keypool


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 20))


def test_every_method(daemon, pool: str) -> None:
    async def scenario() -> None:
        async with keypool.AsyncClient(daemon.addr, pool=pool) as c:
            assert await c.ping() and (await c.version()).count(".") == 2
            [id] = await c.gen(1)
            secret_id = await c.add("sk-async", keepalive=60)
            assert await c.add("sk-async") == secret_id
            assert await c.delete(secret_id) and not await c.delete(secret_id)
            lease = await c.lease(wait=1, block=5)
            assert lease.id == id and lease.token > 0
            assert await c.lease() is None and await c.get() is None
            assert await c.touch(lease, 5) and await c.ping(id)
            assert (await c.info(id))["token"] == lease.token
            assert await c.release(lease) and not await c.release(lease) and not await c.touch(lease)
            got = await c.get(block=0.2)
            assert got.id == id and got.token is None
            assert await c.release(id, delay=0.2) and not await c.release(id)
            assert (await c.info(id))["state"] == "delayed"
            assert (await c.get(wait=2)).id == id
            assert (await c.stats(pool))["keys"] == 1 and (await c.stats())["block_timeout_ms"] == 1000
            assert await c.info("a" * 24) is None
            with pytest.raises(keypool.ClientError, match="maximum"):
                await c.lease(wait=600)
            with pytest.raises(keypool.ServerError, match="pool full"):
                await c.gen(1001)

    run(scenario())


def test_a_waiting_lease_never_holds_up_another_tasks_request(daemon, pool: str) -> None:
    async def scenario() -> None:
        async with keypool.AsyncClient(daemon.addr, pool=pool) as c:
            waiter = asyncio.ensure_future(c.lease(wait=3))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            [id] = await c.gen(1)
            assert time.monotonic() - started < 1
            assert (await waiter).id == id

    run(scenario())


def test_leased_heartbeat_and_release_on_exception(daemon, pool: str, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with keypool.AsyncClient(daemon.addr, pool=pool) as c:
            [id] = await c.gen(1)
            async with c.leased(wait=1) as lease:
                await asyncio.sleep(1.6)  # past the shared daemon's 1 s block window
                assert (await c.info(id))["token"] == lease.token
            assert (await c.info(id))["state"] == "free"
            with pytest.raises(ZeroDivisionError):
                async with c.leased(wait=1, block=0.3):
                    1 / 0
            assert (await c.info(id))["state"] == "free"
            held = await c.lease()
            with pytest.raises(keypool.NoKeyAvailable):
                async with c.leased(wait=0.1):
                    pytest.fail("entered without a key")
            assert await c.release(held)
            async with c.leased(wait=1, heartbeat=False, block=0.2) as lost:
                await asyncio.sleep(0.4)
            assert lost.token is not None
            async with c.leased(wait=1, block=0.3) as rested:
                assert await c.release(rested, delay=0.3)
                await asyncio.sleep(0.4)
            assert (await c.lease(wait=2)).token > rested.token
            await c.release(id)
            manager = c.leased(wait=1, block=0.3)
            async with manager:
                await c.delete(id)
                for _ in range(40):
                    if manager.lost:
                        break
                    await asyncio.sleep(0.05)
                assert manager.lost

    with caplog.at_level(logging.WARNING, logger="keypool"):
        run(scenario())
    # Once, for the lease without a heartbeat; the rested lease was not released twice.
    assert caplog.text.count("lost before its release (STALE)") == 1 and "lost (NOT_FOUND)" in caplog.text


def test_pipeline(daemon, pool: str) -> None:
    async def scenario() -> list:
        async with keypool.AsyncClient(daemon.addr, pool=pool) as c:
            async with c.pipeline(raise_on_error=False) as p:
                p.gen(2)
                p.lease()
                p.gen(0)
                p.version()
            return p.results

    ids, lease, error, version = run(scenario())
    assert len(ids) == 2 and lease.id in ids and isinstance(error, keypool.ClientError) and version


def test_reconnect_and_auth(start_daemon, tmp_path, pool: str) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("tok-a *\n")
    d = start_daemon("--auth-tokens", str(tokens), "--idle-timeout", "200ms")

    async def scenario() -> None:
        async with keypool.AsyncClient(d.addr, pool=pool, token="tok-a") as c:
            [id] = await c.gen(1)
            await asyncio.sleep(0.5)  # the idle connection is closed by the daemon
            assert await c.ping(id)
        with pytest.raises(keypool.AuthError, match="invalid token"):
            await keypool.AsyncClient(d.addr, token="nope").ping()
        with pytest.raises(keypool.AuthError, match="NOAUTH"):
            await keypool.AsyncClient(d.addr).gen(1)

    run(scenario())


def test_the_call_in_flight_raises_and_the_next_one_reconnects(start_daemon, pool: str) -> None:
    d = start_daemon()

    async def scenario() -> None:
        c = keypool.AsyncClient(d.addr, pool=pool, timeout=2)
        await c.gen(1)
        await c.lease()
        waiter = asyncio.ensure_future(c.lease(wait=10))
        await asyncio.sleep(0.3)
        await asyncio.get_running_loop().run_in_executor(None, d.restart)
        with pytest.raises(keypool.ConnectionError):
            await waiter
        assert await c.gen(1) and (await c.stats(pool))["keys"] == 1
        await c.close()

    run(scenario())


def test_connection_error_when_nobody_listens() -> None:
    from conftest import free_port

    with pytest.raises(keypool.ConnectionError):
        run(keypool.AsyncClient(f"127.0.0.1:{free_port()}", timeout=1).ping())
