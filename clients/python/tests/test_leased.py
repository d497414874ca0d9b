"""Client.leased(): releases with its token on every exit, and its heartbeat keeps a long job's key."""

from __future__ import annotations

import logging
import time

import pytest

import keypool


def test_leased_releases_the_key_when_the_block_ends(client: keypool.Client) -> None:
    [id] = client.gen(1)
    with client.leased(wait=1) as lease:
        assert lease.id == id and lease.token is not None
        assert client.info(id)["state"] == "blocked"
    assert client.info(id)["state"] == "free"


def test_leased_releases_the_key_when_the_block_raises(client: keypool.Client) -> None:
    [id] = client.gen(1)
    with pytest.raises(RuntimeError, match="the API said no"):
        with client.leased(wait=1):
            raise RuntimeError("the API said no")
    assert client.info(id)["state"] == "free"


def test_heartbeat_keeps_the_lease_past_its_block_window(client: keypool.Client, pool: str) -> None:
    """The shared daemon's block window is 1 s; the job holds its key for 2.5 s and keeps it."""
    [id] = client.gen(1)
    with client.leased(wait=1) as lease:
        time.sleep(2.5)
        info = client.info(id)
        assert info["state"] == "blocked" and info["token"] == lease.token
        assert client.lease() is None
    assert client.stats(pool)["released_by_timeout"] == 0
    assert client.info(id)["state"] == "free"


def test_heartbeat_follows_the_block_window_asked_for(client: keypool.Client) -> None:
    [id] = client.gen(1)
    with client.leased(wait=1, block=0.3) as lease:
        time.sleep(0.8)
        assert client.info(id)["token"] == lease.token
    assert client.info(id)["state"] == "free"


def test_without_heartbeat_a_lost_lease_is_logged_not_raised(
    client: keypool.Client, caplog: pytest.LogCaptureFixture
) -> None:
    [id] = client.gen(1)
    with caplog.at_level(logging.WARNING, logger="keypool"):
        with client.leased(wait=1, heartbeat=False, block=0.2) as lease:
            time.sleep(0.4)  # the block window passes: the lease is over
            assert client.lease().id == id  # someone else's lease now
    assert any("was lost" in r.getMessage() and "STALE" in r.getMessage() for r in caplog.records)
    assert id not in caplog.text  # key ids are the keys themselves: never logged
    info = client.info(id)
    assert info["state"] == "blocked" and info["token"] > lease.token  # the new holder keeps it


def test_heartbeat_reports_a_lease_released_from_under_it(
    client: keypool.Client, caplog: pytest.LogCaptureFixture
) -> None:
    [id] = client.gen(1)
    with caplog.at_level(logging.WARNING, logger="keypool"):
        with client.leased(wait=1, block=0.3):
            client.release(id)  # someone releases it without a token
            deadline = time.monotonic() + 2
            while "lost (STALE)" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
    assert "lost (STALE); stop using its key" in caplog.text
    assert caplog.text.count("was lost") == 1  # the heartbeat said it; the release does not repeat it


def test_leased_context_reports_loss(client: keypool.Client) -> None:
    [id] = client.gen(1)
    manager = client.leased(wait=1, block=0.3)
    with manager:
        assert not manager.lost
        client.delete(id)
        deadline = time.monotonic() + 2
        while not manager.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert manager.lost


def test_releasing_inside_the_block_with_a_delay_is_not_undone(
    client: keypool.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's worker: a rate-limited key is rested for a while, and leased() leaves it resting."""
    [id] = client.gen(1)
    with caplog.at_level(logging.WARNING, logger="keypool"):
        with client.leased(wait=1, block=0.3) as lease:
            assert client.release(lease, delay=30)
            time.sleep(0.4)  # a heartbeat still running would now log the lease as lost
    assert client.info(id)["state"] == "delayed"
    assert caplog.text == ""
