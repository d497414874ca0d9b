"""The command line, ``python -m keypool``: a few commands for shell scripts.

    python -m keypool gen 3                  # prints the new ids, one a line
    python -m keypool lease --wait 30        # prints "<id> <token>[ <secret>]"; exit 1 when none came free
    python -m keypool release ID [TOKEN]     # prints the reply word; exit 1 unless RELEASED
    python -m keypool stats [POOL]           # prints "<name> <value>" lines
    python -m keypool import keys.txt        # ADD per line (- for stdin); reports added/existing counts

The daemon's address, the pool and the token come from ``--addr``/``--pool``/``--token`` or from
$KEYPOOL_ADDR, $KEYPOOL_POOL and $KEYPOOL_TOKEN (an environment variable keeps a token out of ``ps``).
Exit status: 0 success, 1 a negative answer (no key, not released, a line not imported), 2 an error.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import IO, Iterator, List, Optional, Sequence, Tuple

from . import wire
from .client import Client
from .errors import Error
from .lease import Lease

__all__ = ["main"]

# How many ADDs an import sends per write: large enough to amortise round trips, small enough that one
# batch's replies fit easily in socket buffers.
IMPORT_BATCH = 1000

_DURATION = re.compile(r"([0-9]*\.?[0-9]+)(ms|s|m|h)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def duration(text: str) -> float:
    """A duration argument in seconds: ``2.5`` (seconds), or with a unit as on the wire: ``250ms``, ``5m``."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 30, 1.5, 250ms, 5m)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m keypool", description="Talk to a keypool daemon from a shell script."
    )
    parser.add_argument("--addr", default=None, help="host:port (default: $KEYPOOL_ADDR or 127.0.0.1:7171)")
    parser.add_argument("--pool", default=os.environ.get("KEYPOOL_POOL") or None, help="pool (default: $KEYPOOL_POOL)")
    parser.add_argument("--token", default=os.environ.get("KEYPOOL_TOKEN") or None, help="AUTH token ($KEYPOOL_TOKEN)")
    parser.add_argument("--timeout", type=duration, default=5.0, help="I/O timeout in seconds (default 5)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = commands.add_parser("gen", help="mint N keys and print their ids")
    gen.add_argument("n", type=int, help="how many (1 to 10000)")

    lease = commands.add_parser("lease", help="lease a key and print '<id> <token>[ <secret>]'")
    lease.add_argument("--wait", type=duration, default=None, help="wait this long for a free key")
    lease.add_argument("--block", type=duration, default=None, help="the lease's block window")

    release = commands.add_parser("release", help="release a leased key")
    release.add_argument("id", help="the key's id")
    release.add_argument("lease_token", nargs="?", default=None, metavar="TOKEN", help="the lease's token (recommended)")
    release.add_argument("--delay", type=duration, default=None, help="hand it out again only after this")

    stats = commands.add_parser("stats", help="print the daemon's (or a pool's) STATS")
    stats.add_argument("stats_pool", nargs="?", default=None, metavar="POOL", help="one pool only")

    imp = commands.add_parser("import", help="ADD every line of FILE (- for stdin) as a key's secret")
    imp.add_argument("file", help="one secret a line; blank lines are skipped")
    imp.add_argument("--keepalive", type=duration, default=None, help="the keys' keep-alive (0: forever)")
    return parser


def main(argv: Optional[Sequence[str]] = None, stdout: IO[str] = sys.stdout, stderr: IO[str] = sys.stderr) -> int:
    """Runs one command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        with Client(args.addr, pool=args.pool, token=args.token, timeout=args.timeout) as client:
            return _run(client, args, stdout, stderr)
    except (Error, ValueError, OSError) as e:
        print(f"keypool: {e}", file=stderr)
        return 2


def _run(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if args.command == "gen":
        for id in client.gen(args.n):
            print(id, file=out)
        return 0
    if args.command == "lease":
        lease = client.lease(args.wait, args.block)
        if lease is None:
            print("keypool: no key is free", file=err)
            return 1
        fields = [lease.id, str(lease.token)] + ([lease.secret] if lease.secret is not None else [])
        print(" ".join(fields), file=out)
        return 0
    if args.command == "release":
        key = args.id if args.lease_token is None else Lease(args.id, _token(args.lease_token))
        word = client._call(wire.release_word(key, args.delay))
        print(word, file=out)
        return 0 if word == "RELEASED" else 1
    if args.command == "stats":
        for name, value in client.stats(args.stats_pool).items():
            print(f"{name} {value}", file=out)
        return 0
    return _import(client, args.file, args.keepalive, out, err)


def _token(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"a token is a whole number, not {text!r}")
    return int(text)


def _import(client: Client, path: str, keepalive: Optional[float], out: IO[str], err: IO[str]) -> int:
    added = existing = rejected = 0
    source = sys.stdin if path == "-" else open(path, encoding="ascii", errors="replace")
    try:
        for batch in _batches(source):
            with client.pipeline(raise_on_error=False) as p:
                numbers = []
                for number, secret in batch:
                    try:
                        p._requests.append(wire.add_detailed(secret, keepalive))
                        numbers.append(number)
                    except ValueError as e:
                        rejected += 1
                        print(f"keypool: line {number}: {e}", file=err)
            for number, result in zip(numbers, p.results):
                if isinstance(result, Error):
                    rejected += 1
                    print(f"keypool: line {number}: {result}", file=err)
                elif result[1]:
                    added += 1
                else:
                    existing += 1
    finally:
        if source is not sys.stdin:
            source.close()
    print(f"added {added}, existing {existing}" + (f", rejected {rejected}" if rejected else ""), file=out)
    return 1 if rejected else 0


def _batches(source: IO[str]) -> Iterator[List[Tuple[int, str]]]:
    """The file's non-blank lines, numbered from 1, in groups of IMPORT_BATCH."""
    batch: List[Tuple[int, str]] = []
    for number, line in enumerate(source, start=1):
        secret = line.strip()
        if secret:
            batch.append((number, secret))
            if len(batch) == IMPORT_BATCH:
                yield batch
                batch = []
    if batch:
        yield batch
