"""The blocking :class:`Client`, shared safely by threads, and its :meth:`Client.leased` helper.

Requests on one connection are answered in order, so a ``LEASE`` that waits for a key would hold back
every request behind it. The client therefore keeps a small pool of connections and gives each request in
flight its own: a worker's ``REL`` never waits behind another worker's ``LEASE 30s``. Idle connections
are kept (up to ``max_idle``) so that a busy worker pays for a connect once, not per request.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from . import wire
from .connection import Address, Connection, parse_address
from .errors import ConnectionError, Error, NoKeyAvailable
from .lease import Lease
from .pipeline import Pipeline
from .wire import KeyRef, Seconds, T

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Type

__all__ = ["Client", "Leased"]

log = logging.getLogger("keypool")


class Client:
    """A connection pool to one keypool daemon, safe to share between threads.

    ``addr`` is ``host:port`` (default: $KEYPOOL_ADDR, else ``127.0.0.1:7171``); ``token`` is sent with
    ``AUTH`` and ``pool`` with ``USE`` on every connection the client opens; ``timeout`` (seconds) bounds
    connecting and every read, plus the wait of a request that waits for a key. Durations are float
    seconds (or timedeltas). Nothing is connected until the first call.

    A connection that breaks makes the call in flight raise :class:`keypool.ConnectionError`; the next call
    connects again (once: if that fails, it raises too). A connection the daemon closed while it was idle
    (``--idle-timeout``, a restart) is noticed before use and replaced without an error.
    """

    def __init__(
        self,
        addr: Optional[Address] = None,
        pool: Optional[str] = None,
        token: Optional[str] = None,
        timeout: float = 5.0,
        *,
        max_idle: int = 8,
    ) -> None:
        self.address = parse_address(addr)
        self.pool = pool
        self.timeout = timeout
        self.max_idle = max_idle
        self._token = token
        self._idle: List[Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._block_timeout: Optional[float] = None
        # The leases inside a `with leased()` block: release() of one of them stops its
        # heartbeat, and the block then leaves the key alone.
        self._held: Dict[Lease, "Leased"] = {}

    # -- commands -------------------------------------------------------------------------------

    def gen(self, n: int = 1) -> List[str]:
        """Mints ``n`` new keys (1 to 10000) and returns their ids."""
        return self._call(wire.gen(n))

    def add(self, secret: str, keepalive: Optional[Seconds] = None) -> str:
        """Adds a key carrying ``secret`` and returns its id, or the existing key's id when the pool already
        holds that secret. ``keepalive`` is the key's own keep-alive window (0: never expires)."""
        return self._call(wire.add(secret, keepalive))

    def get(self, wait: Optional[Seconds] = None, block: Optional[Seconds] = None) -> Optional[Lease]:
        """Leases a free key without a fencing token (``GET``); None when none is free, after waiting up to
        ``wait`` seconds if given. ``block`` is the lease's block window instead of the daemon's."""
        return self._call(wire.get(wait, block))

    def lease(self, wait: Optional[Seconds] = None, block: Optional[Seconds] = None) -> Optional[Lease]:
        """Leases a free key with a fencing token (``LEASE``); None when none came free within ``wait``.
        ``block`` is the lease's block window instead of the daemon's ``--block-timeout``."""
        return self._call(wire.lease(wait, block))

    def release(self, key: KeyRef, delay: Optional[Seconds] = None) -> bool:
        """Releases a leased key, handing it out again after ``delay`` seconds if given. ``key`` is an id
        or a :class:`Lease` (whose token is sent, so only that lease is released). False when the key was
        not blocked, the lease is over (``STALE``), or there is no such key.

        Inside ``with client.leased() as lease:``, ``client.release(lease, delay=60)`` gives the key back
        (say, resting a rate-limited key) and the block does not release it again."""
        if isinstance(key, Lease):
            with self._lock:
                held = self._held.pop(key, None)
            if held is not None:
                held._stop_heartbeat()
        return self._call(wire.release(key, delay))

    def touch(self, key: KeyRef, duration: Optional[Seconds] = None) -> bool:
        """Starts the lease's block window again, for ``duration`` seconds or the daemon's default. False
        when the key is not blocked, the lease is over (``STALE``), or there is no such key."""
        return self._call(wire.touch(key, duration))

    def delete(self, id: str) -> bool:
        """Deletes a key for good; False when there was no such key."""
        return self._call(wire.delete(id))

    def ping(self, id: Optional[str] = None) -> bool:
        """Restarts a key's keep-alive window; False when there is no such key. Without an id, a health
        check of the daemon (True)."""
        return self._call(wire.ping(id))

    def info(self, id: str) -> Optional[wire.Stats]:
        """The key's ``INFO`` fields (``state``, ``token``, ``blocked_until_ms``, ...), numbers as int;
        None when there is no such key."""
        return self._call(wire.info(id))

    def stats(self, pool: Optional[str] = None) -> wire.Stats:
        """The daemon's ``STATS`` (or one pool's), numbers as int."""
        return self._call(wire.stats(pool))

    def version(self) -> str:
        """The daemon's version, such as ``0.1.0``."""
        return self._call(wire.version())

    # -- helpers --------------------------------------------------------------------------------

    def leased(
        self, wait: Optional[Seconds] = 5.0, heartbeat: bool = True, block: Optional[Seconds] = None
    ) -> "Leased":
        """``with client.leased(wait=5.0) as lease:``: the safe way to hold a key.

        Leases a key with a token (waiting up to ``wait`` seconds, else raising
        :class:`keypool.NoKeyAvailable`), keeps it while the block runs by touching it from a background
        thread every third of the block window (``heartbeat``), and releases it with its token when the
        block exits, normally or by an exception. A lease lost meanwhile is logged, not raised.
        """
        return Leased(self, wait, heartbeat, block)

    def pipeline(self, raise_on_error: bool = True) -> Pipeline:
        """``with client.pipeline() as p: p.get(); p.ping(id)``: requests sent in one write on exit, their
        answers in ``p.results``. See :class:`keypool.Pipeline`."""
        return Pipeline(self, raise_on_error)

    def block_timeout(self) -> float:
        """The daemon's ``--block-timeout`` in seconds, asked once and remembered."""
        if self._block_timeout is None:
            self._block_timeout = int(self.stats()["block_timeout_ms"]) / 1000
        return self._block_timeout

    def close(self) -> None:
        """Closes the idle connections, and the busy ones as they finish; later calls raise."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(
        self,
        exc_type: "Optional[Type[BaseException]]",
        exc: Optional[BaseException],
        tb: "Optional[TracebackType]",
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        host, port = self.address
        return f"Client({host}:{port}, pool={self.pool!r})"

    # -- the connection pool --------------------------------------------------------------------

    def _call(self, request: wire.Request[T]) -> T:
        conn = self._acquire()
        try:
            return conn.call(request)
        finally:
            self._give_back(conn)

    def _run(self, requests: List[wire.Request[Any]]) -> List[Any]:
        conn = self._acquire()
        try:
            return conn.run(requests)
        finally:
            self._give_back(conn)

    def _acquire(self) -> Connection:
        while True:
            with self._lock:
                if self._closed:
                    raise ConnectionError("the client is closed")
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return Connection(self.address, self.timeout, self._token, self.pool)
            if not conn.is_closed_by_peer():
                return conn
            conn.close()

    def _give_back(self, conn: Connection) -> None:
        if conn.broken:
            return
        with self._lock:
            if not self._closed and len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        conn.close()


class Leased:
    """The context manager :meth:`Client.leased` returns; entering it yields the :class:`Lease`."""

    def __init__(self, client: Client, wait: Optional[Seconds], heartbeat: bool, block: Optional[Seconds]):
        self._client = client
        self._wait = wait
        self._heartbeat = heartbeat
        self._block = block
        self._lease: Optional[Lease] = None
        self._beat: Optional[_Heartbeat] = None

    @property
    def lost(self) -> bool:
        """Whether the heartbeat found the lease lost (``STALE``, or the key gone): stop using the key."""
        return self._beat is not None and self._beat.lost

    def __enter__(self) -> Lease:
        lease = self._client.lease(self._wait, self._block)
        if lease is None:
            raise NoKeyAvailable(f"no key came free within {self._wait}s")
        self._lease = lease
        with self._client._lock:
            self._client._held[lease] = self
        if self._heartbeat:
            try:
                window = self._client.block_timeout() if self._block is None else wire.seconds(self._block)
                self._beat = _Heartbeat(self._client, lease, self._block, window / 3)
                self._beat.start()
            except BaseException:
                self._give_back()
                raise
        return lease

    def __exit__(
        self,
        exc_type: "Optional[Type[BaseException]]",
        exc: Optional[BaseException],
        tb: "Optional[TracebackType]",
    ) -> None:
        self._give_back()

    def _stop_heartbeat(self) -> None:
        if self._beat is not None:
            self._beat.stop(self._client.timeout + 1)

    def _give_back(self) -> None:
        lease = self._lease
        if lease is None:
            return
        self._lease = None
        with self._client._lock:
            still_held = self._client._held.pop(lease, None) is self
        self._stop_heartbeat()
        if not still_held:
            return  # the caller released it with Client.release
        try:
            word = self._client._call(wire.release_word(lease))
        except Error as e:
            # The key comes back by itself when its block window ends; failing the caller's work over
            # the give-back would gain nothing.
            log.warning("could not release the lease with token %s: %s", lease.token, e)
            return
        if word != "RELEASED" and not (self._beat is not None and self._beat.lost):
            log.warning("the lease with token %s was lost before its release (%s)", lease.token, word)


class _Heartbeat(threading.Thread):
    """Touches one lease every ``interval`` seconds until stopped or until the lease turns out lost."""

    def __init__(self, client: Client, lease: Lease, block: Optional[Seconds], interval: float) -> None:
        super().__init__(name=f"keypool-heartbeat-{lease.token}", daemon=True)
        self.lost = False
        self._client = client
        self._lease = lease
        self._block = block
        self._interval = interval
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                word = self._client._call(wire.touch_word(self._lease, self._block))
            except Error as e:
                log.warning("heartbeat of the lease with token %s failed, will retry: %s", self._lease.token, e)
                continue
            if word != "TOUCHED":
                self.lost = True
                log.warning("the lease with token %s was lost (%s); stop using its key", self._lease.token, word)
                return

    def stop(self, timeout: float) -> None:
        self._stopping.set()
        self.join(timeout)
