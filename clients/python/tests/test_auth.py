"""Authentication and pools: AUTH and USE on every connection, and AuthError for each refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

import keypool


@pytest.fixture
def auth_daemon(start_daemon, tmp_path: Path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# token   pool\ntok-openai  openai\ntok-admin   *\n")
    return start_daemon("--auth-tokens", str(tokens))


def test_a_token_puts_the_client_in_its_pool(auth_daemon) -> None:
    with keypool.Client(auth_daemon.addr, token="tok-openai") as c:
        [id] = c.gen(1)
        assert c.stats("openai")["keys"] == 1
    with keypool.Client(auth_daemon.addr, token="tok-admin", pool="openai") as admin:
        assert admin.ping(id)
    with keypool.Client(auth_daemon.addr, token="tok-admin") as admin:
        assert not admin.ping(id)  # in pool default: another pool's keys are not seen


def test_no_token_is_noauth(auth_daemon) -> None:
    with keypool.Client(auth_daemon.addr) as c:
        assert c.ping() and c.version()  # allowed before AUTH
        with pytest.raises(keypool.AuthError, match="NOAUTH"):
            c.gen(1)


def test_a_bad_token_is_an_auth_error(auth_daemon) -> None:
    with pytest.raises(keypool.AuthError, match="invalid token"):
        keypool.Client(auth_daemon.addr, token="tok-wrong").ping()


def test_a_pool_the_token_does_not_grant_is_an_auth_error(auth_daemon) -> None:
    with pytest.raises(keypool.AuthError, match="forbidden"):
        keypool.Client(auth_daemon.addr, token="tok-openai", pool="anthropic").ping()
    with keypool.Client(auth_daemon.addr, token="tok-openai") as c:
        with pytest.raises(keypool.AuthError, match="forbidden"):
            c.stats("anthropic")


def test_a_token_sent_to_a_daemon_without_auth_is_an_auth_error(daemon) -> None:
    with pytest.raises(keypool.AuthError, match="not enabled"):
        keypool.Client(daemon.addr, token="tok").ping()


def test_pools_keep_their_keys_apart(daemon, pool: str) -> None:
    with keypool.Client(daemon.addr, pool=pool) as a, keypool.Client(daemon.addr, pool=pool + "-b") as b:
        [id] = a.gen(1)
        assert b.lease() is None and not b.ping(id)
        assert a.lease().id == id
