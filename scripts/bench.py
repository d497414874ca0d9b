#!/usr/bin/env python3
"""Reruns every measurement in BENCHMARKS.md and prints its tables.

Each server runs pinned to CPU 0 and keypool-bench to CPU 1 (taskset), on loopback only. Every figure is
the median of --runs runs (default 3). Servers are started fresh for each configuration and stopped by
their PID. Needs: a release build (`cargo build --release`), and for the baselines redis-server and
memcached on the PATH (`apt-get install redis-server memcached`).

    python3 scripts/bench.py                 # everything (about 15 minutes)
    python3 scripts/bench.py --only compare  # one section: compare, scaling, memory, idle
    python3 scripts/bench.py --duration 3s --runs 5
    python3 scripts/bench.py --only contend  # handoffs: 1000 connections sharing 10 keys
    python3 scripts/bench.py --only versus --baseline-daemon /path/to/older/keypool   # lease, old vs new
    python3 scripts/bench.py --only persistence   # --data-dir: fsync policies, redis AOF, recovery, compaction
    python3 scripts/bench.py --only http     # the HTTP gateway's lease against TCP's, on one daemon
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAEMON = os.path.join(ROOT, "target", "release", "keypool")
BENCH = os.path.join(ROOT, "target", "release", "keypool-bench")
PORTS = {"keypool": 17171, "redis": 17172, "memcached": 17173}
HTTP_PORT = 17174
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

    def __init__(self, target, extra=(), daemon=DAEMON, start_timeout=10.0):
        port = PORTS[target]
        if target == "keypool":
            cmd = [daemon, "--listen", f"127.0.0.1:{port}", "--max-keys", "20000000", *extra]
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
        wait_for_port(port, start_timeout)

    def rss_bytes(self):
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self):
        """User plus system CPU time the server has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def seconds(text):
    """A keypool-bench duration (`250ms`, `3s`, `1m`) in seconds."""
    for unit, scale in (("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(unit) and text[: -len(unit)].isdigit():
            return int(text[: -len(unit)]) * scale
    raise ValueError(f"not a duration: {text}")


def measured(server, target, duration, **options):
    """`bench`, plus how much server CPU time each operation took (warm-up and seeding included in the
    time, so it is an upper bound)."""
    before = server.cpu_seconds()
    result = bench(target, duration, **options)
    if result["ops"]:
        # The CPU time spans the warm-up too, whose operations are not counted: scale them in.
        measured_s = seconds(duration)
        ops_all = result["ops"] * (measured_s + seconds(options.get("warmup", "1s"))) / measured_s
        result["server_cpu_us_per_op"] = (server.cpu_seconds() - before) * 1e6 / ops_all
    return result


def bench(target, duration, **options):
    cmd = ["taskset", "-c", CLIENT_CPU, BENCH, "--server", f"127.0.0.1:{PORTS[target]}", "--target", target,
           "--duration", duration, "--json", "--quiet"]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        cmd += [flag] if value is True else [flag, str(value)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600).stdout
    return json.loads(out)


def fmt_ops(ops):
    return f"{ops / 1000:,.0f}k" if ops < 1e6 else f"{ops / 1e6:.2f}M"


def summarize(results):
    return {
        "ops_per_sec": statistics.median(r["ops_per_sec"] for r in results),
        "p50_us": statistics.median(r["latency_us"]["p50"] for r in results),
        "p99_us": statistics.median(r["latency_us"]["p99"] for r in results),
        "runs": [r["ops_per_sec"] for r in results],
        "server_cpu_us_per_op": statistics.median(r.get("server_cpu_us_per_op", 0) for r in results),
    }


def interleaved(targets, args, **options):
    """Runs every target once per round, `args.runs` rounds, so that each round's figures were taken
    under the same conditions; returns per-target medians and the median of per-round ratios to redis."""
    results = {target: [] for target in targets}
    for _ in range(args.runs):
        for target in targets:
            server = Server(target)
            try:
                results[target].append(measured(server, target, args.duration, **options))
            finally:
                server.stop()
    figures = {target: summarize(rs) for target, rs in results.items()}
    if "redis" in results and "keypool" in results:
        figures["ratio_to_redis"] = statistics.median(
            k["ops_per_sec"] / r["ops_per_sec"] for k, r in zip(results["keypool"], results["redis"]))
        figures["p99_ratio_to_redis"] = statistics.median(
            k["latency_us"]["p99"] / r["latency_us"]["p99"] for k, r in zip(results["keypool"], results["redis"]))
    return figures


def section_compare(args):
    print("\n## keypool vs redis vs memcached (50 connections)\n")
    print("| workload | pipeline | server | ops/s | p50 us | p99 us | server CPU us/op | ops/s vs redis | p99 vs redis |")
    print("|---|---|---|---|---|---|---|---|---|")
    have = {t: shutil.which(b) is not None for t, b in (("redis", "redis-server"), ("memcached", "memcached"))}
    rows = []
    for workload in args.workloads:
        for pipeline in (1, 32):
            targets = ["keypool"] + [t for t in ("redis", "memcached") if have[t] and workload not in ("gen", "mixed")]
            figures = interleaved(targets, args, workload=workload, pipeline=pipeline, keys=args.keys)
            for target in targets:
                m = figures[target]
                vs = (f"{figures['ratio_to_redis']:.2f}x | {figures['p99_ratio_to_redis']:.2f}x"
                      if target == "keypool" and "ratio_to_redis" in figures else " | ")
                print(f"| {workload} | {pipeline} | {target} | {fmt_ops(m['ops_per_sec'])} | {m['p50_us']:.0f} | "
                      f"{m['p99_us']:.0f} | {m['server_cpu_us_per_op']:.2f} | {vs} |", flush=True)
            rows.append({"workload": workload, "pipeline": pipeline, **figures})
    return rows


def rounds(configs, args):
    """Runs each (label, target, options) once per round, `args.runs` rounds, against a fresh server;
    returns {label: list of results}, index i of every list taken in round i."""
    results = {label: [] for label, _, _ in configs}
    for _ in range(args.runs):
        for label, target, options in configs:
            server = Server(target)
            try:
                results[label].append(measured(server, target, args.duration, **options))
            finally:
                server.stop()
    return results


def ratio(results, numerator, denominator):
    return statistics.median(n["ops_per_sec"] / d["ops_per_sec"] for n, d in zip(results[numerator], results[denominator]))


def section_scaling(args):
    print("\n## lease throughput against pool size (keypool, 50 connections)\n")
    print("| keys | pipeline 1 ops/s | p99 us | vs 1e3 | pipeline 32 ops/s | p99 us | vs 1e3 |")
    print("|---|---|---|---|---|---|---|")
    sizes = (1_000, 100_000, 1_000_000, 10_000_000)
    rows = []
    for pipeline in (1, 32):
        configs = [(keys, "keypool", dict(workload="lease", pipeline=pipeline, keys=keys)) for keys in sizes]
        results = rounds(configs, args)
        rows.append({"pipeline": pipeline, **{str(k): summarize(results[k]) for k in sizes},
                     "ratio_to_1e3": {str(k): ratio(results, k, 1_000) for k in sizes}})
    for keys in sizes:
        cells = []
        for row in rows:
            m = row[str(keys)]
            cells += [fmt_ops(m["ops_per_sec"]), f"{m['p99_us']:.0f}", f"{row['ratio_to_1e3'][str(keys)]:.2f}x"]
        print(f"| {keys:,} | " + " | ".join(cells) + " |", flush=True)
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
    base = dict(workload="lease", pipeline=1, keys=args.keys)
    results = rounds([("alone", "keypool", base), ("with_idle", "keypool", dict(base, idle=1000))], args)
    alone, crowd = summarize(results["alone"]), summarize(results["with_idle"])
    crowd_ratio = ratio(results, "with_idle", "alone")
    print("| busy only ops/s | p99 us | with 1000 idle ops/s | p99 us | ratio |")
    print("|---|---|---|---|---|")
    print(f"| {fmt_ops(alone['ops_per_sec'])} | {alone['p99_us']:.0f} | {fmt_ops(crowd['ops_per_sec'])} | "
          f"{crowd['p99_us']:.0f} | {crowd_ratio:.2f}x |")
    return {"alone": alone, "with_idle": crowd, "ratio": crowd_ratio}


def section_http(args):
    print("\n## HTTP gateway lease (GET /keys + PUT /keys/{id}) against TCP lease, 50 connections, one in flight\n")
    print("| round | TCP ops/s | p50 us | p99 us | HTTP ops/s | p50 us | p99 us | HTTP / TCP |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for run in range(args.runs):
        # One daemon per round serves both front ends; TCP first (it seeds the keys), then HTTP on them.
        server = Server("keypool", extra=["--http", f"127.0.0.1:{HTTP_PORT}"])
        try:
            wait_for_port(HTTP_PORT)
            tcp = measured(server, "keypool", args.duration, workload="lease", pipeline=1, keys=args.keys)
            http = measured(server, "keypool", args.duration, workload="lease", http=True,
                            http_server=f"127.0.0.1:{HTTP_PORT}", no_seed=True)
        finally:
            server.stop()
        share = http["ops_per_sec"] / tcp["ops_per_sec"]
        rows.append({"tcp": tcp, "http": http, "ratio": share})
        print(f"| {run + 1} | {fmt_ops(tcp['ops_per_sec'])} | {tcp['latency_us']['p50']} | {tcp['latency_us']['p99']} | "
              f"{fmt_ops(http['ops_per_sec'])} | {http['latency_us']['p50']} | {http['latency_us']['p99']} | "
              f"{share:.2f}x |", flush=True)
    median = statistics.median(row["ratio"] for row in rows)
    print(f"| **median** | {fmt_ops(statistics.median(r['tcp']['ops_per_sec'] for r in rows))} | | | "
          f"{fmt_ops(statistics.median(r['http']['ops_per_sec'] for r in rows))} | | | **{median:.2f}x** |")
    return {"rounds": rows, "median_ratio": median}


def section_contend(args):
    print("\n## contend: LEASE <wait> + REL <id> <token>, 1000 connections sharing 10 keys (keypool)\n")
    print("| run | ops/s | handoffs/s | handoff p50 us | handoff p99 us | handoff p99.9 us | not found | errors |")
    print("|---|---|---|---|---|---|---|---|")
    results = []
    for run in range(args.runs):
        server = Server("keypool")
        try:
            results.append(measured(server, "keypool", args.duration, workload="contend", connections=1000,
                                    keys=10))
        finally:
            server.stop()
        r = results[-1]
        h = r["handoff_latency_us"]
        print(f"| {run + 1} | {fmt_ops(r['ops_per_sec'])} | {fmt_ops(r['handoffs_per_sec'])} | {h['p50']} | "
              f"{h['p99']} | {h['p99_9']} | {r['not_found']} | {r['errors']} |", flush=True)
    median = {
        "handoffs_per_sec": statistics.median(r["handoffs_per_sec"] for r in results),
        "handoff_p50_us": statistics.median(r["handoff_latency_us"]["p50"] for r in results),
        "handoff_p99_us": statistics.median(r["handoff_latency_us"]["p99"] for r in results),
    }
    print(f"| median | | {fmt_ops(median['handoffs_per_sec'])} | {median['handoff_p50_us']:.0f} | "
          f"{median['handoff_p99_us']:.0f} | | | |")
    return {"runs": results, "median": median}


def stat(port, name):
    """One STATS figure of the keypool on `port`."""
    with socket.create_connection(("127.0.0.1", port), timeout=600) as conn:
        conn.sendall(b"STATS\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    for line in data.decode().splitlines():
        parts = line.split(" ")
        if len(parts) == 3 and parts[1] == name:
            return int(parts[2]) if parts[2].isdigit() else parts[2]
    raise RuntimeError(f"no STAT {name}")


def command(port, line):
    with socket.create_connection(("127.0.0.1", port), timeout=600) as conn:
        conn.sendall(line.encode() + b"\r\n")
        return conn.makefile().readline().strip()


def dir_bytes(path):
    return sum(os.path.getsize(os.path.join(path, name)) for name in os.listdir(path))


def section_persistence(args):
    """--data-dir: lease under each fsync policy against in-memory keypool and redis with appendfsync
    always, recovery of 10M keys, and lease latency during a compaction."""
    scratch = tempfile.mkdtemp(prefix="keypool-bench-", dir=os.path.join(ROOT, "target"))
    data = os.path.join(scratch, "data")
    rows = {}
    parts = args.persistence_parts.split(",")
    if "lease" in parts:
        persistence_lease(args, scratch, rows)
    if "recovery" in parts:
        persistence_recovery(data, rows)
    if "compaction" in parts:
        persistence_compaction(args, data, rows)
    shutil.rmtree(scratch, ignore_errors=True)
    return rows


def persistence_lease(args, scratch, rows):
    print("\n## durability: lease (GET + REL), 50 connections\n")
    print("| pipeline | configuration | ops/s | p50 us | p99 us | runs |")
    print("|---|---|---|---|---|---|")
    have_redis = shutil.which("redis-server") is not None
    for pipeline in (1, 32):
        configs = [("in memory", "keypool", []),
                   ("--fsync everysec", "keypool", ["--fsync", "everysec"]),
                   ("--fsync always", "keypool", ["--fsync", "always"])]
        if have_redis:
            configs.append(("redis appendfsync always", "redis", ["--appendonly", "yes", "--appendfsync", "always"]))
        results = {label: [] for label, _, _ in configs}
        for _ in range(args.runs):
            for label, target, extra in configs:
                data = os.path.join(scratch, "data")
                shutil.rmtree(data, ignore_errors=True)
                os.makedirs(data)
                if target == "keypool" and extra:
                    extra = ["--data-dir", data, *extra]
                elif target == "redis":
                    extra = [*extra, "--dir", data]
                server = Server(target, extra)
                try:
                    results[label].append(measured(server, target, args.duration, workload="lease",
                                                   pipeline=pipeline, keys=args.keys))
                finally:
                    server.stop()
        for label, _, _ in configs:
            m = summarize(results[label])
            runs = " ".join(fmt_ops(r["ops_per_sec"]) for r in results[label])
            print(f"| {pipeline} | {label} | {fmt_ops(m['ops_per_sec'])} | {m['p50_us']:.0f} | {m['p99_us']:.0f} | {runs} |",
                  flush=True)
        ratios = {"everysec_vs_memory": ratio(results, "--fsync everysec", "in memory")}
        if have_redis:
            ratios["always_vs_redis_always"] = ratio(results, "--fsync always", "redis appendfsync always")
        print(f"| {pipeline} | ratios (median of rounds) | " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()) + " | | | |")
        rows[f"lease_p{pipeline}"] = {label: summarize(r) for label, r in results.items()} | {"ratios": ratios}



def persistence_recovery(data, rows):
    print("\n## recovery of 10,000,000 keys\n")
    print("| from | keys | bytes on disk | bytes per key | recovery_ms (STAT) | start to first reply, s |")
    print("|---|---|---|---|---|---|")
    shutil.rmtree(data, ignore_errors=True)
    keys = 10_000_000
    long_lived = ["--keepalive-timeout", "1h"]
    server = Server("keypool", ["--data-dir", data, "--fsync", "no", *long_lived])
    try:
        bench("keypool", "1s", workload="ping", keys=keys, warmup="0s")
    finally:
        server.stop()
    recovery = {}
    for label in ("log only", "snapshot"):
        started = time.time()
        server = Server("keypool", ["--data-dir", data, "--fsync", "no", *long_lived], start_timeout=300)
        try:
            first_reply = time.time() - started
            recovered = stat(PORTS["keypool"], "recovery_ms")
            present = stat(PORTS["keypool"], "keys")
            on_disk = dir_bytes(data)
            print(f"| {label} | {present:,} | {on_disk:,} | {on_disk / max(present, 1):.1f} | {recovered} | {first_reply:.2f} |",
                  flush=True)
            recovery[label] = {"keys": present, "bytes": on_disk, "recovery_ms": recovered, "first_reply_s": first_reply}
            if label == "log only":
                command(PORTS["keypool"], "COMPACT")
        finally:
            server.stop()
    rows["recovery"] = recovery


def persistence_compaction(args, data, rows):

    print("\n## lease p99 during compactions (1,000,000 keys, --fsync everysec, 50 connections, pipeline 1)\n")
    print("| round | no compaction: ops/s | p99 us | COMPACT back to back: ops/s | p99 us | compactions | p99 ratio |")
    print("|---|---|---|---|---|---|---|")
    plain, busy, p99_ratios = [], [], []
    for round_ in range(args.runs):
        for compacting, into in ((False, plain), (True, busy)):
            shutil.rmtree(data, ignore_errors=True)
            server = Server("keypool", ["--data-dir", data, "--fsync", "everysec"])
            stop = threading.Event()

            def compact_loop():
                while not stop.is_set():
                    command(PORTS["keypool"], "COMPACT")

            try:
                bench("keypool", "1s", workload="ping", keys=1_000_000, warmup="0s")
                before = stat(PORTS["keypool"], "compactions")
                loop = threading.Thread(target=compact_loop) if compacting else None
                if loop:
                    loop.start()
                result = bench("keypool", args.duration, workload="lease", pipeline=1, no_seed=True)
                stop.set()
                if loop:
                    loop.join()
                result["compactions"] = stat(PORTS["keypool"], "compactions") - before
                into.append(result)
            finally:
                stop.set()
                server.stop()
        p99_ratios.append(busy[-1]["latency_us"]["p99"] / plain[-1]["latency_us"]["p99"])
        print(f"| {round_ + 1} | {fmt_ops(plain[-1]['ops_per_sec'])} | {plain[-1]['latency_us']['p99']} | "
              f"{fmt_ops(busy[-1]['ops_per_sec'])} | {busy[-1]['latency_us']['p99']} | {busy[-1]['compactions']} | "
              f"{p99_ratios[-1]:.2f}x |", flush=True)
    during = {"no compaction": summarize(plain), "COMPACT back to back": summarize(busy),
              "p99_ratio": statistics.median(p99_ratios)}
    print(f"\np99 during compactions / p99 without (median of per-round ratios): {during['p99_ratio']:.2f}x")
    rows["compaction"] = during


def section_versus(args):
    if not args.baseline_daemon:
        sys.exit("--only versus needs --baseline-daemon PATH (an older keypool build to compare with)")
    print(f"\n## lease: this build vs {args.baseline_daemon} (50 connections)\n")
    print("| pipeline | this build ops/s | baseline ops/s | ratio (median of rounds) | runs (this / baseline) |")
    print("|---|---|---|---|---|")
    rows = []
    for pipeline in (1, 32):
        now, then = [], []
        for _ in range(args.runs):
            for daemon, into in ((DAEMON, now), (args.baseline_daemon, then)):
                server = Server("keypool", daemon=daemon)
                try:
                    into.append(measured(server, "keypool", args.duration, workload="lease", pipeline=pipeline,
                                         keys=args.keys))
                finally:
                    server.stop()
        ratio_ = statistics.median(n["ops_per_sec"] / t["ops_per_sec"] for n, t in zip(now, then))
        runs = " ".join(f"{fmt_ops(n['ops_per_sec'])}/{fmt_ops(t['ops_per_sec'])}" for n, t in zip(now, then))
        print(f"| {pipeline} | {fmt_ops(summarize(now)['ops_per_sec'])} | {fmt_ops(summarize(then)['ops_per_sec'])} | "
              f"{ratio_:.3f}x | {runs} |", flush=True)
        rows.append({"pipeline": pipeline, "this": summarize(now), "baseline": summarize(then), "ratio": ratio_})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", default="5s")
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--workloads", nargs="+", default=["lease", "ping", "info"])
    parser.add_argument("--only", choices=["compare", "scaling", "memory", "idle", "contend", "versus", "persistence",
                                            "http"])
    parser.add_argument("--baseline-daemon", help="an older keypool binary, for --only versus")
    parser.add_argument("--full-memory", action="store_true", help="also measure the baselines at 1e7 keys")
    parser.add_argument("--persistence-parts", default="lease,recovery,compaction",
                        help="for --only persistence: which parts, comma-separated")
    parser.add_argument("--out", default=os.path.join(ROOT, "target", "bench-results.json"))
    args = parser.parse_args()
    for binary in (DAEMON, BENCH):
        if not os.path.exists(binary):
            sys.exit(f"{binary} is missing: run `cargo build --release` first")

    print(f"machine: {os.cpu_count()} cores, {subprocess.run(['uname', '-sr'], capture_output=True, text=True).stdout.strip()}; "
          f"server on CPU {SERVER_CPU}, keypool-bench on CPU {CLIENT_CPU}; medians of {args.runs} runs of {args.duration}")
    sections = {"compare": section_compare, "scaling": section_scaling, "memory": section_memory, "idle": section_idle,
                "contend": section_contend, "versus": section_versus, "persistence": section_persistence,
                "http": section_http}
    results = {}
    for name, run in sections.items():
        # versus needs a second build, so it runs only when asked for.
        if args.only == name or (args.only is None and name != "versus"):
            results[name] = run(args)
    with open(args.out, "w") as out:
        json.dump(results, out, indent=1)
    print(f"\nraw figures: {args.out}")


if __name__ == "__main__":
    main()
