"""Pipelines: many requests in one write, their answers read back in order.

:class:`Batch` queues requests and knows nothing of sockets; :class:`Pipeline` sends a batch over one of
the blocking client's connections, :class:`keypool.aio.AsyncPipeline` over an asyncio one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Optional

from . import wire
from .errors import Error
from .wire import KeyRef, Seconds

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Type

    from .client import Client

__all__ = ["Batch", "Pipeline"]


class Batch:
    """Requests queued to be sent together; each method queues one and returns nothing.

    After the batch has run, :attr:`results` holds one answer per request, in order, of the type the
    :class:`keypool.Client` method of the same name returns. A request the daemon refused holds its
    exception instance instead (and, with ``raise_on_error``, the first of them is raised).
    """

    def __init__(self, raise_on_error: bool = True) -> None:
        self.raise_on_error = raise_on_error
        self.results: List[Any] = []
        self._requests: List[wire.Request[Any]] = []

    def __len__(self) -> int:
        return len(self._requests)

    def gen(self, n: int = 1) -> None:
        """Queues :meth:`keypool.Client.gen`."""
        self._requests.append(wire.gen(n))

    def add(self, secret: str, keepalive: Optional[Seconds] = None) -> None:
        """Queues :meth:`keypool.Client.add`."""
        self._requests.append(wire.add(secret, keepalive))

    def get(self, wait: Optional[Seconds] = None, block: Optional[Seconds] = None) -> None:
        """Queues :meth:`keypool.Client.get`. A wait holds back the answers queued after it."""
        self._requests.append(wire.get(wait, block))

    def lease(self, wait: Optional[Seconds] = None, block: Optional[Seconds] = None) -> None:
        """Queues :meth:`keypool.Client.lease`. A wait holds back the answers queued after it."""
        self._requests.append(wire.lease(wait, block))

    def release(self, key: KeyRef, delay: Optional[Seconds] = None) -> None:
        """Queues :meth:`keypool.Client.release`."""
        self._requests.append(wire.release(key, delay))

    def touch(self, key: KeyRef, duration: Optional[Seconds] = None) -> None:
        """Queues :meth:`keypool.Client.touch`."""
        self._requests.append(wire.touch(key, duration))

    def delete(self, id: str) -> None:
        """Queues :meth:`keypool.Client.delete`."""
        self._requests.append(wire.delete(id))

    def ping(self, id: Optional[str] = None) -> None:
        """Queues :meth:`keypool.Client.ping`."""
        self._requests.append(wire.ping(id))

    def info(self, id: str) -> None:
        """Queues :meth:`keypool.Client.info`."""
        self._requests.append(wire.info(id))

    def stats(self, pool: Optional[str] = None) -> None:
        """Queues :meth:`keypool.Client.stats`."""
        self._requests.append(wire.stats(pool))

    def version(self) -> None:
        """Queues :meth:`keypool.Client.version`."""
        self._requests.append(wire.version())

    def _take(self) -> List[wire.Request[Any]]:
        requests, self._requests = self._requests, []
        return requests

    def _finish(self, results: List[Any]) -> List[Any]:
        self.results = results
        if self.raise_on_error:
            for result in results:
                if isinstance(result, Error):
                    raise result
        return results


class Pipeline(Batch):
    """A batch sent over the blocking client: ``with client.pipeline() as p: p.get(); p.ping(id)``.

    Leaving the ``with`` block sends every queued request in one write and reads the answers into
    :attr:`results`; leaving it by an exception sends nothing.
    """

    def __init__(self, client: "Client", raise_on_error: bool = True) -> None:
        super().__init__(raise_on_error)
        self._client = client

    def execute(self) -> List[Any]:
        """Sends the queued requests now and returns (and keeps in :attr:`results`) their answers."""
        requests = self._take()
        if not requests:
            return self._finish([])
        return self._finish(self._client._run(requests))

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(
        self,
        exc_type: "Optional[Type[BaseException]]",
        exc: Optional[BaseException],
        tb: "Optional[TracebackType]",
    ) -> None:
        if exc_type is None:
            self.execute()
