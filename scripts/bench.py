#!/usr/bin/env python3
"""Reruns every measurement in BENCHMARKS.md and prints its tables.

Each server runs pinned to CPU 0 and keypool-bench to CPU 1 (taskset), on loopback only. Every figure is
the median of --runs runs (default 3). Servers are started fresh for each configuration and stopped by
their PID. Needs: a release build (`cargo build --release`), and for the baselines redis-server and
memcached on the PATH (`apt-get install redis-server memcached`).

    python3 scripts/bench.py                 # everything (about 15 minutes)
    python3 scripts/bench.py --only compare  # one section: compare, scaling, memory, idle
    python3 scripts/bench.py --duration 3s --runs 5
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAEMON = os.path.join(ROOT, "target", "release", "keypool")
BENCH = os.path.join(ROOT, "target", "release", "keypool-bench")
PORTS = {"keypool": 17171, "redis": 17172, "memcached": 17173}
SERVER_CPU, CLIENT_CPU = "0", "1"


def wait_for_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


class Server:
    """A server process pinned to the server CPU, stopped by its PID."""

    def __init__(self, target, extra=()):
        port = PORTS[target]
        if target == "keypool":
            cmd = [DAEMON, "--listen", f"127.0.0.1:{port}", "--max-keys", "20000000", *extra]
        elif target == "redis":
            cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--protected-mode", "yes", *extra]
        else:
            cmd = ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "1", "-m", "4096",
                   "-c", "4096", "-u", "root", *extra]
        self.target, self.port = target, port
        env = dict(os.environ, RUST_LOG="warn")
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CPU, *cmd], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port)

    def rss_bytes(self):
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def bench(target, duration, **options):
    cmd = ["taskset", "-c", CLIENT_CPU, BENCH, "--server", f"127.0.0.1:{PORTS[target]}", "--target", target,
           "--duration", duration, "--json", "--quiet"]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        cmd += [flag] if value is True else [flag, str(value)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600).stdout
    return json.loads(out)


def median_run(target, runs, duration, server_extra=(), **options):
    """Median ops/s, p50 and p99 over `runs` runs, each against a freshly started server."""
    results = []
    for _ in range(runs):
        server = Server(target, server_extra)
        try:
            results.append(bench(target, duration, **options))
        finally:
            server.stop()
    for r in results:
        if r["errors"] or r["unexpected"] or r["failed_connections"]:
            print(f"warning: {target} {options}: {r['errors']} errors, {r['unexpected']} unexpected, "
                  f"{r['failed_connections']} failed connections ({r['first_unexpected'] or r['first_failure']})",
                  file=sys.stderr)
    return {
        "ops_per_sec": statistics.median(r["ops_per_sec"] for r in results),
        "p50_us": statistics.median(r["latency_us"]["p50"] for r in results),
        "p99_us": statistics.median(r["latency_us"]["p99"] for r in results),
        "runs": [r["ops_per_sec"] for r in results],
    }


def fmt_ops(ops):
    return f"{ops / 1000:,.0f}k" if ops < 1e6 else f"{ops / 1e6:.2f}M"


def section_compare(args):
    print("\n## keypool vs redis vs memcached (50 connections)\n")
    print("| workload | pipeline | keypool ops/s | p50 / p99 us | redis ops/s | p50 / p99 us | memcached ops/s | p50 / p99 us | keypool / redis |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for workload in args.workloads:
        for pipeline in (1, 32):
            cells, figures = [], {}
            for target in ("keypool", "redis", "memcached"):
                if target != "keypool" and shutil.which({"redis": "redis-server", "memcached": "memcached"}[target]) is None:
                    cells += ["n/a", "n/a"]
                    continue
                if target != "keypool" and workload in ("gen", "mixed"):
                    cells += ["-", "-"]
                    continue
                m = median_run(target, args.runs, args.duration, workload=workload, pipeline=pipeline,
                               keys=args.keys)
                figures[target] = m
                cells += [fmt_ops(m["ops_per_sec"]), f"{m['p50_us']:.0f} / {m['p99_us']:.0f}"]
            ratio = (f"{figures['keypool']['ops_per_sec'] / figures['redis']['ops_per_sec']:.2f}x"
                     if "redis" in figures else "-")
            print(f"| {workload} | {pipeline} | " + " | ".join(cells) + f" | {ratio} |", flush=True)
            rows.append({"workload": workload, "pipeline": pipeline, **figures})
    return rows


def section_scaling(args):
    print("\n## lease throughput against pool size (keypool, 50 connections)\n")
    print("| keys | pipeline 1 ops/s | p99 us | pipeline 32 ops/s | p99 us |")
    print("|---|---|---|---|---|")
    rows = []
    for keys in (1_000, 100_000, 1_000_000, 10_000_000):
        one = median_run("keypool", args.runs, args.duration, workload="lease", pipeline=1, keys=keys)
        many = median_run("keypool", args.runs, args.duration, workload="lease", pipeline=32, keys=keys)
        print(f"| {keys:,} | {fmt_ops(one['ops_per_sec'])} | {one['p99_us']:.0f} | "
              f"{fmt_ops(many['ops_per_sec'])} | {many['p99_us']:.0f} |", flush=True)
        rows.append({"keys": keys, "pipeline_1": one, "pipeline_32": many})
    return rows


def section_memory(args):
    print("\n## memory per key (RSS with N keys minus RSS empty)\n")
    print("| keys | keypool B/key | redis B/key (set member) | memcached B/key (item) |")
    print("|---|---|---|---|")
    rows = []
    for keys in (1_000_000, 10_000_000):
        cells = []
        for target in ("keypool", "redis", "memcached"):
            if target != "keypool" and (keys > 1_000_000 and not args.full_memory):
                cells.append("-")
                continue
            server = Server(target)
            try:
                time.sleep(0.2)
                empty = server.rss_bytes()
                bench(target, "100ms", workload="lease", keys=keys,
                      connections=1, warmup="0s")
                time.sleep(0.5)
                per_key = (server.rss_bytes() - empty) / keys
            finally:
                server.stop()
            cells.append(f"{per_key:.1f}")
            rows.append({"target": target, "keys": keys, "bytes_per_key": per_key})
        print(f"| {keys:,} | " + " | ".join(cells) + " |", flush=True)
    return rows


def section_idle(args):
    print("\n## 1000 idle connections beside 50 busy ones (keypool lease, pipeline 1)\n")
    alone = median_run("keypool", args.runs, args.duration, workload="lease", pipeline=1, keys=args.keys)
    crowd = median_run("keypool", args.runs, args.duration, workload="lease", pipeline=1, keys=args.keys, idle=1000)
    ratio = crowd["ops_per_sec"] / alone["ops_per_sec"]
    print("| busy only ops/s | with 1000 idle ops/s | ratio |")
    print("|---|---|---|")
    print(f"| {fmt_ops(alone['ops_per_sec'])} | {fmt_ops(crowd['ops_per_sec'])} | {ratio:.2f}x |")
    return {"alone": alone, "with_idle": crowd, "ratio": ratio}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", default="5s")
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--workloads", nargs="+", default=["lease", "ping", "info"])
    parser.add_argument("--only", choices=["compare", "scaling", "memory", "idle"])
    parser.add_argument("--full-memory", action="store_true", help="also measure the baselines at 1e7 keys")
    parser.add_argument("--out", default=os.path.join(ROOT, "target", "bench-results.json"))
    args = parser.parse_args()
    for binary in (DAEMON, BENCH):
        if not os.path.exists(binary):
            sys.exit(f"{binary} is missing: run `cargo build --release` first")

    print(f"machine: {os.cpu_count()} cores, {subprocess.run(['uname', '-sr'], capture_output=True, text=True).stdout.strip()}; "
          f"server on CPU {SERVER_CPU}, keypool-bench on CPU {CLIENT_CPU}; medians of {args.runs} runs of {args.duration}")
    sections = {"compare": section_compare, "scaling": section_scaling, "memory": section_memory, "idle": section_idle}
    results = {}
    for name, run in sections.items():
        if args.only in (None, name):
            results[name] = run(args)
    with open(args.out, "w") as out:
        json.dump(results, out, indent=1)
    print(f"\nraw figures: {args.out}")


if __name__ == "__main__":
    main()
