"""The asyncio client: :class:`AsyncClient` offers :class:`keypool.Client`'s methods as coroutines.

It is built the same way as the blocking client, over asyncio streams: the same :mod:`keypool.wire`
requests, a small pool of connections so that a task's ``LEASE`` that waits never holds up another task's
request, and ``async with client.leased(...)`` with the heartbeat as a task. An AsyncClient belongs to the
event loop that first uses it; it is not meant to be shared between threads.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, cast

from . import wire
from .connection import MAX_REPLY_LINE, Address, decode, parse_address
from .errors import ConnectionError, Error, NoKeyAvailable, ProtocolError
from .lease import Lease
from .pipeline import Batch
from .wire import KeyRef, Seconds, T

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Type

__all__ = ["AsyncClient", "AsyncLeased", "AsyncPipeline"]

log = logging.getLogger("keypool")


class _AsyncConnection:
    """An asyncio stream to the daemon that has been through its handshake (``AUTH``, ``USE``)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self._reader = reader
        self._writer = writer
        self._timeout = timeout
        self.broken = False

    @classmethod
    async def open(
        cls, address: Tuple[str, int], timeout: float, token: Optional[str], pool: Optional[str]
    ) -> "_AsyncConnection":
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address[0], address[1], limit=MAX_REPLY_LINE), timeout
            )
        except (OSError, asyncio.TimeoutError) as e:
            raise ConnectionError(f"cannot connect to keypool at {address[0]}:{address[1]}: {e!r}") from e
        conn = cls(reader, writer, timeout)
        handshake = wire.handshake(token, pool)
        if handshake:
            try:
                for result in await conn.run(handshake):
                    if isinstance(result, Error):
                        raise result
            except Error:
                conn.close()
                raise
        return conn

    async def run(self, requests: Sequence[wire.Request[Any]]) -> List[Any]:
        """Sends requests in one write and reads their replies; replies that are errors come back as
        exception instances in their place, a failure of the connection raises."""
        timeout = self._timeout + sum(r.wait for r in requests)
        try:
            self._writer.write(b"".join(r.line for r in requests))
            await asyncio.wait_for(self._writer.drain(), timeout)
            results = []
            for request in requests:
                lines = await asyncio.wait_for(self._read_reply(request), timeout)
                try:
                    results.append(wire.interpret(request, lines))
                except Error as e:
                    results.append(e)
            for result in results:
                if isinstance(result, ProtocolError):
                    raise result
            return results
        except Error:
            self.close()
            raise
        except asyncio.TimeoutError as e:
            self.close()
            raise ConnectionError("connection to keypool failed: timed out") from e
        except (OSError, asyncio.LimitOverrunError, ValueError) as e:
            self.close()
            raise ConnectionError(f"connection to keypool failed: {e!r}") from e
        except asyncio.CancelledError:
            # A cancelled request leaves its reply unread: the connection is out of step for good.
            self.close()
            raise

    def is_closed_by_peer(self) -> bool:
        """Whether the daemon closed this idle connection (the stream has seen end of file)."""
        return self._reader.at_eof() or self._writer.is_closing()

    def close(self) -> None:
        """Closes the stream; the connection is broken from then on."""
        self.broken = True
        self._writer.close()

    async def _read_line(self) -> str:
        raw = await self._reader.readline()
        if not raw.endswith(b"\n"):
            if not raw:
                raise ConnectionError("connection closed by the daemon")
            raise ProtocolError("reply line cut short")
        return decode(raw)

    async def _read_reply(self, request: wire.Request[Any]) -> List[str]:
        first = await self._read_line()
        lines = [first]
        if wire.continues_block(request, first):
            while lines[-1] != "END":
                lines.append(await self._read_line())
        return lines


class AsyncClient:
    """:class:`keypool.Client` for asyncio: the same arguments, the same methods, as coroutines.

    ``async with keypool.AsyncClient() as c: lease = await c.lease(wait=5)``.
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
        self._idle: List[_AsyncConnection] = []
        self._closed = False
        self._block_timeout: Optional[float] = None
        # As in Client: the leases inside an `async with leased()` block.
        self._held: Dict[Lease, "AsyncLeased"] = {}

    async def gen(self, n: int = 1) -> List[str]:
        """As :meth:`keypool.Client.gen`."""
        return await self._call(wire.gen(n))

    async def add(self, secret: str, keepalive: Optional[Seconds] = None) -> str:
        """As :meth:`keypool.Client.add`."""
        return await self._call(wire.add(secret, keepalive))

    async def get(self, wait: Optional[Seconds] = None, block: Optional[Seconds] = None) -> Optional[Lease]:
        """As :meth:`keypool.Client.get`."""
        return await self._call(wire.get(wait, block))

    async def lease(self, wait: Optional[Seconds] = None, block: Optional[Seconds] = None) -> Optional[Lease]:
        """As :meth:`keypool.Client.lease`."""
        return await self._call(wire.lease(wait, block))

    async def release(self, key: KeyRef, delay: Optional[Seconds] = None) -> bool:
        """As :meth:`keypool.Client.release` (which also says how it works inside ``leased()``)."""
        if isinstance(key, Lease):
            held = self._held.pop(key, None)
            if held is not None:
                await held._stop_heartbeat()
        return await self._call(wire.release(key, delay))

    async def touch(self, key: KeyRef, duration: Optional[Seconds] = None) -> bool:
        """As :meth:`keypool.Client.touch`."""
        return await self._call(wire.touch(key, duration))

    async def delete(self, id: str) -> bool:
        """As :meth:`keypool.Client.delete`."""
        return await self._call(wire.delete(id))

    async def ping(self, id: Optional[str] = None) -> bool:
        """As :meth:`keypool.Client.ping`."""
        return await self._call(wire.ping(id))

    async def info(self, id: str) -> Optional[wire.Stats]:
        """As :meth:`keypool.Client.info`."""
        return await self._call(wire.info(id))

    async def stats(self, pool: Optional[str] = None) -> wire.Stats:
        """As :meth:`keypool.Client.stats`."""
        return await self._call(wire.stats(pool))

    async def version(self) -> str:
        """As :meth:`keypool.Client.version`."""
        return await self._call(wire.version())

    def leased(
        self, wait: Optional[Seconds] = 5.0, heartbeat: bool = True, block: Optional[Seconds] = None
    ) -> "AsyncLeased":
        """``async with client.leased(wait=5.0) as lease:``, as :meth:`keypool.Client.leased`, with the
        heartbeat as an asyncio task."""
        return AsyncLeased(self, wait, heartbeat, block)

    def pipeline(self, raise_on_error: bool = True) -> "AsyncPipeline":
        """``async with client.pipeline() as p: p.get(); ...``: sent in one write when the block exits."""
        return AsyncPipeline(self, raise_on_error)

    async def block_timeout(self) -> float:
        """The daemon's ``--block-timeout`` in seconds, asked once and remembered."""
        if self._block_timeout is None:
            self._block_timeout = int((await self.stats())["block_timeout_ms"]) / 1000
        return self._block_timeout

    async def close(self) -> None:
        """Closes the idle connections, and the busy ones as they finish; later calls raise."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(
        self,
        exc_type: "Optional[Type[BaseException]]",
        exc: Optional[BaseException],
        tb: "Optional[TracebackType]",
    ) -> None:
        await self.close()

    async def _call(self, request: wire.Request[T]) -> T:
        result = (await self._run([request]))[0]
        if isinstance(result, Error):
            raise result
        return cast(T, result)  # run() keeps each answer in its request's place

    async def _run(self, requests: List[wire.Request[Any]]) -> List[Any]:
        conn = await self._acquire()
        try:
            return await conn.run(requests)
        finally:
            self._give_back(conn)

    async def _acquire(self) -> _AsyncConnection:
        # Only the event loop's thread touches the idle list, and it is never awaited while changed.
        while True:
            if self._closed:
                raise ConnectionError("the client is closed")
            if not self._idle:
                return await _AsyncConnection.open(self.address, self.timeout, self._token, self.pool)
            conn = self._idle.pop()
            if not conn.is_closed_by_peer():
                return conn
            conn.close()

    def _give_back(self, conn: _AsyncConnection) -> None:
        if conn.broken:
            return
        if not self._closed and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.close()


class AsyncPipeline(Batch):
    """A batch sent over the asyncio client when its ``async with`` block exits (or on ``await execute()``)."""

    def __init__(self, client: AsyncClient, raise_on_error: bool = True) -> None:
        super().__init__(raise_on_error)
        self._client = client

    async def execute(self) -> List[Any]:
        """Sends the queued requests now and returns (and keeps in :attr:`results`) their answers."""
        requests = self._take()
        if not requests:
            return self._finish([])
        return self._finish(await self._client._run(requests))

    async def __aenter__(self) -> "AsyncPipeline":
        return self

    async def __aexit__(
        self,
        exc_type: "Optional[Type[BaseException]]",
        exc: Optional[BaseException],
        tb: "Optional[TracebackType]",
    ) -> None:
        if exc_type is None:
            await self.execute()


class AsyncLeased:
    """The async context manager :meth:`AsyncClient.leased` returns; entering it yields the :class:`Lease`."""

    def __init__(self, client: AsyncClient, wait: Optional[Seconds], heartbeat: bool, block: Optional[Seconds]):
        self._client = client
        self._wait = wait
        self._heartbeat = heartbeat
        self._block = block
        self._lease: Optional[Lease] = None
        self._beat: Optional["asyncio.Task[None]"] = None
        self.lost = False
        """Whether the heartbeat found the lease lost (``STALE``): stop using the key."""

    async def __aenter__(self) -> Lease:
        lease = await self._client.lease(self._wait, self._block)
        if lease is None:
            raise NoKeyAvailable(f"no key came free within {self._wait}s")
        self._lease = lease
        self._client._held[lease] = self
        if self._heartbeat:
            try:
                window = await self._client.block_timeout() if self._block is None else wire.seconds(self._block)
            except BaseException:
                await self._give_back()
                raise
            self._beat = asyncio.ensure_future(self._beat_until_cancelled(lease, window / 3))
        return lease

    async def __aexit__(
        self,
        exc_type: "Optional[Type[BaseException]]",
        exc: Optional[BaseException],
        tb: "Optional[TracebackType]",
    ) -> None:
        await self._give_back()

    async def _beat_until_cancelled(self, lease: Lease, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                word = await self._client._call(wire.touch_word(lease, self._block))
            except Error as e:
                log.warning("heartbeat of the lease with token %s failed, will retry: %s", lease.token, e)
                continue
            if word != "TOUCHED":
                self.lost = True
                log.warning("the lease with token %s was lost (%s); stop using its key", lease.token, word)
                return

    async def _stop_heartbeat(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            # asyncio.wait, not await: the heartbeat's own cancellation must not look like ours.
            await asyncio.wait({self._beat})

    async def _give_back(self) -> None:
        lease = self._lease
        if lease is None:
            return
        self._lease = None
        still_held = self._client._held.pop(lease, None) is self
        await self._stop_heartbeat()
        if not still_held:
            return  # the caller released it with AsyncClient.release
        try:
            word = await self._client._call(wire.release_word(lease))
        except Error as e:
            log.warning("could not release the lease with token %s: %s", lease.token, e)
            return
        if word != "RELEASED" and not self.lost:
            log.warning("the lease with token %s was lost before its release (%s)", lease.token, word)
