"""What the Python client costs per lease: a timed loop of LEASE + REL, with the client and with a raw socket.

    taskset -c 0 target/release/keypool --listen 127.0.0.1:7199 &
    taskset -c 1 python3 clients/python/bench_leases.py --addr 127.0.0.1:7199 --leases 100000 --runs 3

Both loops do the same work, one request at a time on one connection: lease a key with a token, release it
with that token. The raw loop is the README's socket worker with nothing around it (no timeouts, no
checks); the difference is what the client's safety costs. Prints each run and the medians, of wall-clock
time and of the Python process's own CPU time (which a busy machine disturbs much less than wall time).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import keypool  # noqa: E402


Timing = Tuple[float, float]
"""Wall-clock seconds and the process's CPU seconds of one loop."""


def with_client(addr: str, pool: str, n: int) -> Timing:
    client = keypool.Client(addr, pool=pool)
    client.ping()  # connect before the clock starts
    started, started_cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        lease = client.lease()
        client.release(lease)
    elapsed = time.perf_counter() - started, time.process_time() - started_cpu
    client.close()
    return elapsed


def with_raw_socket(addr: str, pool: str, n: int) -> Timing:
    host, port = addr.rsplit(":", 1)
    conn = socket.create_connection((host, int(port)))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    replies = conn.makefile("rb")
    conn.sendall(f"USE {pool}\r\n".encode())
    replies.readline()
    started, started_cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        conn.sendall(b"LEASE\r\n")
        _, key_id, token, _secret = replies.readline().split()
        conn.sendall(b"REL " + key_id + b" " + token + b"\r\n")
        if replies.readline() != b"RELEASED\r\n":
            raise SystemExit("raw loop: unexpected reply")
    elapsed = time.perf_counter() - started, time.process_time() - started_cpu
    conn.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:7171")
    parser.add_argument("--leases", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    pool = "bench-python"
    with keypool.Client(args.addr, pool=pool) as c:
        for i in range(100):  # keys that never expire: a run may outlast the keep-alive window
            c.add(f"bench-key-{i}", keepalive=0)
    loops = {"client": with_client, "raw socket": with_raw_socket}
    times: Dict[str, List[Timing]] = {name: [] for name in loops}
    per_lease = 1e6 / args.leases
    for run in range(args.runs):
        for name, loop in loops.items():  # interleaved, so drift on a shared machine hits both alike
            wall, cpu = loop(args.addr, pool, args.leases)
            times[name].append((wall, cpu))
            print(f"run {run + 1} {name:>10}: {wall * per_lease:6.1f} us per lease, {cpu * per_lease:5.1f} us CPU")
    for i, what in enumerate(["wall-clock", "Python CPU"]):
        client, raw = (statistics.median(t[i] for t in times[name]) * per_lease for name in loops)
        print(
            f"median {what} per lease (LEASE + REL): client {client:.1f} us, raw socket {raw:.1f} us; "
            f"the client adds {client - raw:.1f} us ({(client - raw) / raw * 100:.0f}%)"
        )


if __name__ == "__main__":
    main()
