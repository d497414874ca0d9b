"""keypool: the Python client of the keypool daemon, which leases API keys to workers.

The safe way to hold a key is one line::

    import keypool

    client = keypool.Client("127.0.0.1:7171")
    with client.leased(wait=30) as lease:      # a key with a fencing token, kept alive while you work
        call_the_api(str(lease))               # its secret (or id); released when the block exits

:class:`Client` is blocking and thread-safe; :class:`AsyncClient` is the same over asyncio. Errors are
:class:`Error` and its subclasses. ``python -m keypool`` is a small command line for scripts. Standard
library only; Python 3.9+.
"""

from .aio import AsyncClient, AsyncLeased, AsyncPipeline
from .client import Client, Leased
from .errors import AuthError, ClientError, ConnectionError, Error, NoKeyAvailable, ProtocolError, ServerError
from .lease import Lease
from .pipeline import Batch, Pipeline

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncLeased",
    "AsyncPipeline",
    "AuthError",
    "Batch",
    "Client",
    "ClientError",
    "ConnectionError",
    "Error",
    "Lease",
    "Leased",
    "NoKeyAvailable",
    "Pipeline",
    "ProtocolError",
    "ServerError",
]
