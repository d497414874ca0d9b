"""python -m keypool, run as a script would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keypool
from conftest import PACKAGE_ROOT


def run(daemon, *args: str, stdin: str = "", pool: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT), "KEYPOOL_ADDR": daemon.addr, "KEYPOOL_POOL": pool}
    return subprocess.run(
        [sys.executable, "-m", "keypool", *args], input=stdin, capture_output=True, text=True, env=env, timeout=20
    )


def test_gen_prints_the_new_ids(daemon, client: keypool.Client, pool: str) -> None:
    done = run(daemon, "gen", "3", pool=pool)
    ids = done.stdout.split()
    assert done.returncode == 0 and len(ids) == 3
    assert all(client.ping(id) for id in ids)


def test_lease_and_release(daemon, client: keypool.Client, pool: str) -> None:
    client.add("sk-cli")
    done = run(daemon, "lease", "--wait", "1", "--block", "30s", pool=pool)
    id, token, secret = done.stdout.split()
    assert done.returncode == 0 and secret == "sk-cli" and client.info(id)["token"] == int(token)
    assert run(daemon, "lease", "--wait", "100ms", pool=pool).returncode == 1  # none free
    done = run(daemon, "release", id, token, pool=pool)
    assert (done.returncode, done.stdout) == (0, "RELEASED\n")
    done = run(daemon, "release", id, token, pool=pool)
    assert (done.returncode, done.stdout) == (1, "STALE\n")


def test_stats_prints_name_value_lines(daemon, client: keypool.Client, pool: str) -> None:
    client.gen(2)
    done = run(daemon, "stats", pool)
    assert done.returncode == 0 and f"pool {pool}\n" in done.stdout and "\nkeys 2\n" in done.stdout
    assert "block_timeout_ms 1000" in run(daemon, "stats").stdout


def test_import_adds_each_line_and_counts(daemon, client: keypool.Client, pool: str, tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("sk-one\nsk-two\n\nsk-one\n")
    done = run(daemon, "import", str(keys), pool=pool)
    assert (done.returncode, done.stdout) == (0, "added 2, existing 1\n")
    done = run(daemon, "import", "-", stdin="sk-two\nsk three\nsk-four\n", pool=pool)
    assert (done.returncode, done.stdout) == (1, "added 1, existing 1, rejected 1\n")
    assert "line 2" in done.stderr and "sk three" not in done.stderr
    assert client.stats(pool)["keys"] == 3


def test_errors_exit_2_with_a_message(daemon) -> None:
    done = run(daemon, "gen", "0")
    assert done.returncode == 2 and "GEN count" in done.stderr
    env_addr = run(daemon, "--addr", "127.0.0.1:1", "stats")
    assert env_addr.returncode == 2 and "cannot connect" in env_addr.stderr
