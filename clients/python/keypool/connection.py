"""One blocking connection to the daemon: connect and authenticate, send a batch, read its replies.

A connection that fails in any way the protocol cannot recover from (an I/O error, a timeout, a reply it
does not understand) marks itself ``broken`` and closes; the client then drops it and a later call opens a
new one. Errors the daemon reports in a reply (``CLIENT_ERROR`` and friends) leave it usable.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import sys
from typing import Any, List, Optional, Sequence, Tuple, Union

from . import wire
from .wire import T
from .errors import ConnectionError, Error, ProtocolError

DEFAULT_ADDRESS = "127.0.0.1:7171"
# The longest reply line accepted: a lease reply with the longest secret the daemon can hold (--max-line
# is at most 1 MiB) fits with room to spare.
MAX_REPLY_LINE = 2 * 1024 * 1024

# How much one recv asks for: a batch of replies to a pipeline, or a whole GEN block, in few calls.
RECV_SIZE = 64 * 1024
# On POSIX the read and write timeouts are the kernel's (SO_RCVTIMEO, SO_SNDTIMEO) on a blocking socket:
# Python's own socket timeouts poll() before every send and recv, which doubles the system calls of a
# request. Windows takes those options in another format, so there Python's timeouts are used.
KERNEL_TIMEOUTS = sys.platform != "win32" and hasattr(socket, "SO_RCVTIMEO")

Address = Union[str, Tuple[str, int]]


def parse_address(addr: Optional[Address]) -> Tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6), a ``(host, port)`` pair, or None for $KEYPOOL_ADDR or the
    default ``127.0.0.1:7171``."""
    if addr is None:
        addr = os.environ.get("KEYPOOL_ADDR") or DEFAULT_ADDRESS
    if isinstance(addr, tuple):
        return addr[0], int(addr[1])
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address must be host:port, not {addr!r}")
    return host.strip("[]"), int(port)


def decode(raw: bytes) -> str:
    """A reply line without its line ending. Replies are ASCII; latin-1 never fails on a stray byte."""
    return raw.rstrip(b"\r\n").decode("latin-1")


class Connection:
    """A blocking socket to the daemon that has been through its handshake (``AUTH``, ``USE``)."""

    def __init__(self, address: Tuple[str, int], timeout: float, token: Optional[str], pool: Optional[str]):
        self._timeout = timeout
        self.broken = False
        try:
            self._sock = socket.create_connection(address, timeout=timeout)
        except OSError as e:
            raise ConnectionError(f"cannot connect to keypool at {address[0]}:{address[1]}: {e}") from e
        # Requests are small and each waits for its reply: Nagle's algorithm would only add latency.
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if KERNEL_TIMEOUTS:
            self._sock.settimeout(None)
        self._sock_timeout: Optional[float] = None
        self._set_timeout(timeout)
        # Received bytes not yet returned as lines start at _pos.
        self._buf = b""
        self._pos = 0
        handshake = wire.handshake(token, pool)
        if handshake:
            try:
                for result in self.run(handshake):
                    if isinstance(result, Error):
                        raise result
            except Error:
                self.close()
                raise

    def call(self, request: wire.Request[T]) -> T:
        """Sends one request and returns its parsed reply (raising the error the reply carries).

        The same as ``run([request])``, without the batch's bookkeeping: this is every call's hot path.
        """
        try:
            self._set_timeout(self._timeout + request.wait)
            self._sock.sendall(request.line)
            lines = self._read_reply(request)
        except Error:
            self.close()
            raise
        except OSError as e:
            raise self._broken_by(e) from e
        try:
            return wire.interpret(request, lines)
        except ProtocolError:
            self.close()
            raise

    def run(self, requests: Sequence[wire.Request[Any]]) -> List[Any]:
        """Sends requests in one write and reads their replies in order.

        A reply that is an error is returned as its exception instance, in its place; a failure of the
        connection itself raises (and breaks the connection).
        """
        try:
            self._set_timeout(self._timeout + sum(r.wait for r in requests))
            self._sock.sendall(b"".join(r.line for r in requests))
            results = []
            for request in requests:
                lines = self._read_reply(request)
                try:
                    results.append(wire.interpret(request, lines))
                except Error as e:
                    results.append(e)
            for result in results:
                if isinstance(result, ProtocolError):
                    raise result
            return results
        except Error:
            # Listed first: keypool's ConnectionError is an OSError too, and needs no wrapping.
            self.close()
            raise
        except OSError as e:
            raise self._broken_by(e) from e

    def _broken_by(self, e: OSError) -> ConnectionError:
        self.close()
        # A kernel timeout surfaces as EAGAIN (BlockingIOError), Python's as socket.timeout.
        what = "timed out" if isinstance(e, (socket.timeout, BlockingIOError)) else str(e)
        return ConnectionError(f"connection to keypool failed: {what}")

    def is_closed_by_peer(self) -> bool:
        """Whether the daemon closed this idle connection (after --idle-timeout, or a restart).

        Between requests the daemon owes nothing, so a socket that is readable has hit end of file (or holds
        bytes nobody asked for): either way it cannot be used. One zero-timeout poll, no blocking.
        """
        if self._pos < len(self._buf):
            return True  # bytes nobody asked for: out of step
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def close(self) -> None:
        """Closes the socket; the connection is broken from then on."""
        self.broken = True
        try:
            self._sock.close()
        except OSError:
            pass

    def _set_timeout(self, timeout: float) -> None:
        # Setting a timeout costs system calls; most requests reuse the last value.
        if timeout == self._sock_timeout:
            return
        if KERNEL_TIMEOUTS:
            micros = max(1, round(timeout * 1e6))  # a zero timeval would mean "wait forever"
            timeval = struct.pack("@ll", micros // 1_000_000, micros % 1_000_000)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        else:
            self._sock.settimeout(timeout)
        self._sock_timeout = timeout

    def _read_line(self) -> str:
        while True:
            end = self._buf.find(b"\n", self._pos)
            if end >= 0:
                raw = self._buf[self._pos : end]
                self._pos = end + 1
                return decode(raw)
            if len(self._buf) - self._pos > MAX_REPLY_LINE:
                raise ProtocolError("reply line too long")
            chunk = self._sock.recv(RECV_SIZE)
            if not chunk:
                raise ConnectionError("connection closed by the daemon")
            self._buf = self._buf[self._pos :] + chunk
            self._pos = 0

    def _read_reply(self, request: wire.Request[Any]) -> List[str]:
        first = self._read_line()
        lines = [first]
        if wire.continues_block(request, first):
            while lines[-1] != "END":
                lines.append(self._read_line())
        return lines
