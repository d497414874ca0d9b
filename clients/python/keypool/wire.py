"""The wire format: each command as a :class:`Request` (its line, plus how to read and parse its reply).

This module does no I/O. The blocking client, the asyncio client and the pipeline all build the same
:class:`Request` values and differ only in how they move bytes, so each reply form of protocol.md is parsed
in exactly one place.
"""

from __future__ import annotations

import datetime
import re
from typing import Any, Callable, Dict, Generic, List, Optional, Tuple, TypeVar, Union

from .errors import AuthError, ClientError, ProtocolError, ServerError
from .lease import Lease

Seconds = Union[int, float, datetime.timedelta]
"""A duration in seconds (or a timedelta); it goes on the wire in whole milliseconds, as ``1500ms``."""

KeyRef = Union[str, Lease]
"""A key named by its id, or a :class:`Lease` (whose token is then sent too)."""

_NUMBER = re.compile(r"[0-9]+")
# What one argument may be: printable ASCII, no spaces (protocol.md's rule for secrets, tokens and names).
_ONE_TOKEN = re.compile(r"[\x21-\x7e]+")
# STAT values that are names even when they happen to be all digits.
_TEXT_STATS = frozenset({"id", "pool", "version", "state"})


T = TypeVar("T")
Stats = Dict[str, Union[int, str]]
"""STAT fields by name; values that are whole numbers are int."""


class Request(Generic[T]):
    """One request: the bytes to send and how its reply is read; ``T`` is what its reply parses to.

    ``block`` says the reply may be a block of lines closed by ``END`` (``GEN``, ``INFO``, ``STATS``);
    ``wait`` is how long the daemon may rightly take before it answers (a ``LEASE <wait>``), which the
    reader adds to its timeout; ``parse`` turns the reply lines into the caller's value.
    """

    __slots__ = ("line", "block", "wait", "parse")

    def __init__(self, line: bytes, parse: Callable[[List[str]], T], block: bool = False, wait: float = 0.0):
        self.line = line
        self.parse = parse
        self.block = block
        self.wait = wait


def millis(value: Seconds, what: str) -> str:
    """``value`` seconds as a wire duration in whole milliseconds, such as ``1500ms``."""
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"{what} must be zero or more seconds, not {value!r}")
    return f"{round(value * 1000)}ms"


def seconds(value: Optional[Seconds]) -> float:
    """``value`` as float seconds; None is 0."""
    if value is None:
        return 0.0
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return float(value)


def _encode(*words: str) -> bytes:
    """A request line; refuses any argument that would not stay one token on one line."""
    for word in words[1:]:
        if not isinstance(word, str):
            raise TypeError(f"{words[0]} arguments must be str, not {type(word).__name__}")
        # A space or line break would split the argument or start a second request (and the message must
        # not echo the argument: it may be a secret).
        if not _ONE_TOKEN.fullmatch(word):
            raise ValueError(f"{words[0]} argument must be non-empty printable ASCII without spaces")
    return (" ".join(words) + "\r\n").encode("ascii")


def raise_for_error(line: str) -> None:
    """Raises the error a reply line carries, if it is an error."""
    if line.startswith("CLIENT_ERROR"):
        message = line[len("CLIENT_ERROR") :].strip()
        if message in ("invalid token", "forbidden", "authentication is not enabled"):
            raise AuthError(message)
        raise ClientError(message)
    if line.startswith("SERVER_ERROR"):
        raise ServerError(line[len("SERVER_ERROR") :].strip())
    if line.startswith("ERROR"):
        message = line[len("ERROR") :].strip()
        if message.startswith("NOAUTH"):
            raise AuthError(message)
        raise ClientError(message)


def _unexpected(lines: List[str]) -> ProtocolError:
    shown = lines[0] if lines else ""
    # A lease reply carries a secret; never put one in an exception message.
    if shown.startswith(("KEY ", "LEASED ")):
        shown = " ".join(shown.split()[:2]) + " ..."
    return ProtocolError(f"unexpected reply {shown[:80]!r}")


def _words(*accepted: str) -> Callable[[List[str]], str]:
    def parse(lines: List[str]) -> str:
        if len(lines) == 1 and lines[0] in accepted:
            return lines[0]
        raise _unexpected(lines)

    return parse


def _value(text: str, name: str) -> Union[int, str]:
    return int(text) if name not in _TEXT_STATS and _NUMBER.fullmatch(text) else text


def _stat_block(lines: List[str]) -> Stats:
    if not lines or lines[-1] != "END":
        raise _unexpected(lines)
    figures: Stats = {}
    for line in lines[:-1]:
        parts = line.split(" ", 2)
        if len(parts) != 3 or parts[0] != "STAT":
            raise _unexpected([line])
        figures[parts[1]] = _value(parts[2], parts[1])
    return figures


def _parse_ids(lines: List[str]) -> List[str]:
    if not lines or lines[-1] != "END":
        raise _unexpected(lines)
    ids = []
    for line in lines[:-1]:
        parts = line.split()
        if len(parts) != 2 or parts[0] != "KEY":
            raise _unexpected([line])
        ids.append(parts[1])
    return ids


def _parse_added(lines: List[str]) -> Tuple[str, bool]:
    parts = lines[0].split() if len(lines) == 1 else []
    if len(parts) == 2 and parts[0] in ("KEY", "EXISTS"):
        return parts[1], parts[0] == "KEY"
    raise _unexpected(lines)


def _parse_key(lines: List[str]) -> Optional[Lease]:
    if lines == ["NOT_FOUND"]:
        return None
    parts = lines[0].split() if len(lines) == 1 else []
    if parts and parts[0] == "KEY" and len(parts) in (2, 3):
        return Lease(parts[1], None, parts[2] if len(parts) == 3 else None)
    raise _unexpected(lines)


def _parse_leased(lines: List[str]) -> Optional[Lease]:
    if lines == ["NOT_FOUND"]:
        return None
    parts = lines[0].split() if len(lines) == 1 else []
    if parts and parts[0] == "LEASED" and len(parts) in (3, 4) and _NUMBER.fullmatch(parts[2]):
        return Lease(parts[1], int(parts[2]), parts[3] if len(parts) == 4 else None)
    raise _unexpected(lines)


def _parse_info(lines: List[str]) -> Optional[Stats]:
    if lines == ["NOT_FOUND"]:
        return None
    return _stat_block(lines)


def _parse_version(lines: List[str]) -> str:
    parts = lines[0].split() if len(lines) == 1 else []
    if len(parts) == 2 and parts[0] == "VERSION":
        return parts[1]
    raise _unexpected(lines)


def _key_args(key: KeyRef) -> List[str]:
    if isinstance(key, Lease):
        return [key.id] if key.token is None else [key.id, str(key.token)]
    return [key]


def _wait_args(wait: Optional[Seconds], block: Optional[Seconds]) -> List[str]:
    if block is not None:
        return [millis(wait or 0, "wait"), millis(block, "block")]
    if wait is not None:
        return [millis(wait, "wait")]
    return []


# One builder per command; each returns the Request that the clients send.


def gen(n: int = 1) -> Request[List[str]]:
    """``GEN n``: a list of new ids."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError("n must be an int")
    return Request(_encode("GEN", str(n)), _parse_ids, block=True)


def add(secret: str, keepalive: Optional[Seconds] = None) -> Request[str]:
    """``ADD secret [keepalive]``: the id, new or existing."""
    return Request(_add_line(secret, keepalive), lambda lines: _parse_added(lines)[0])


def add_detailed(secret: str, keepalive: Optional[Seconds] = None) -> Request[Tuple[str, bool]]:
    """``ADD``, parsed as ``(id, created)``: created is False when the pool already held the secret."""
    return Request(_add_line(secret, keepalive), _parse_added)


def _add_line(secret: str, keepalive: Optional[Seconds]) -> bytes:
    args = [secret] if keepalive is None else [secret, millis(keepalive, "keepalive")]
    return _encode("ADD", *args)


def get(wait: Optional[Seconds] = None, block: Optional[Seconds] = None) -> Request[Optional[Lease]]:
    """``GET [wait [block]]``: a Lease without a token, or None."""
    return Request(_encode("GET", *_wait_args(wait, block)), _parse_key, wait=seconds(wait))


def lease(wait: Optional[Seconds] = None, block: Optional[Seconds] = None) -> Request[Optional[Lease]]:
    """``LEASE [wait [block]]``: a Lease with a token, or None."""
    return Request(_encode("LEASE", *_wait_args(wait, block)), _parse_leased, wait=seconds(wait))


_RELEASE_WORDS = _words("RELEASED", "NOT_BLOCKED", "STALE", "NOT_FOUND")
_TOUCH_WORDS = _words("TOUCHED", "NOT_BLOCKED", "STALE", "NOT_FOUND")


def release(key: KeyRef, delay: Optional[Seconds] = None) -> Request[bool]:
    """``REL id [token] [delay]``: True for RELEASED, False for NOT_BLOCKED, STALE or NOT_FOUND."""
    return Request(_release_line(key, delay), lambda lines: _RELEASE_WORDS(lines) == "RELEASED")


def release_word(key: KeyRef, delay: Optional[Seconds] = None) -> Request[str]:
    """``REL``, parsed as the reply word itself (leased() logs which one it was)."""
    return Request(_release_line(key, delay), _RELEASE_WORDS)


def _release_line(key: KeyRef, delay: Optional[Seconds]) -> bytes:
    return _encode("REL", *_key_args(key), *([] if delay is None else [millis(delay, "delay")]))


def touch(key: KeyRef, duration: Optional[Seconds] = None) -> Request[bool]:
    """``TOUCH id [token] [duration]``: True for TOUCHED, False for NOT_BLOCKED, STALE or NOT_FOUND."""
    return Request(_touch_line(key, duration), lambda lines: _TOUCH_WORDS(lines) == "TOUCHED")


def touch_word(key: KeyRef, duration: Optional[Seconds] = None) -> Request[str]:
    """``TOUCH``, parsed as the reply word itself (the heartbeat logs which one it was)."""
    return Request(_touch_line(key, duration), _TOUCH_WORDS)


def _touch_line(key: KeyRef, duration: Optional[Seconds]) -> bytes:
    return _encode("TOUCH", *_key_args(key), *([] if duration is None else [millis(duration, "duration")]))


def delete(id: str) -> Request[bool]:
    """``DEL id``: True for DELETED, False for NOT_FOUND."""
    words = _words("DELETED", "NOT_FOUND")
    return Request(_encode("DEL", id), lambda lines: words(lines) == "DELETED")


def ping(id: Optional[str] = None) -> Request[bool]:
    """``PING id`` (True for ALIVE, False for NOT_FOUND), or the health check ``PING`` (True for PONG)."""
    if id is None:
        pong = _words("PONG")
        return Request(_encode("PING"), lambda lines: pong(lines) == "PONG")
    words = _words("ALIVE", "NOT_FOUND")
    return Request(_encode("PING", id), lambda lines: words(lines) == "ALIVE")


def info(id: str) -> Request[Optional[Stats]]:
    """``INFO id``: the STAT fields as a dict (integers as int), or None."""
    return Request(_encode("INFO", id), _parse_info, block=True)


def stats(pool: Optional[str] = None) -> Request[Stats]:
    """``STATS [pool]``: the STAT fields as a dict (integers as int)."""
    args = [] if pool is None else [pool]
    return Request(_encode("STATS", *args), _stat_block, block=True)


def version() -> Request[str]:
    """``VERSION``: the daemon's version string."""
    return Request(_encode("VERSION"), _parse_version)


def auth(token: str) -> Request[None]:
    """``AUTH token``: None once accepted (a refusal raises AuthError)."""
    ok = _words("OK")

    def parse(lines: List[str]) -> None:
        ok(lines)

    return Request(_encode("AUTH", token), parse)


def use(pool: str) -> Request[None]:
    """``USE pool``: None once the connection is in the pool."""

    def parse(lines: List[str]) -> None:
        if lines != [f"USING {pool}"]:
            raise _unexpected(lines)

    return Request(_encode("USE", pool), parse)


def handshake(token: Optional[str], pool: Optional[str]) -> List[Request[None]]:
    """What a fresh connection sends before its first request: AUTH, then USE."""
    return ([auth(token)] if token is not None else []) + ([use(pool)] if pool is not None else [])


def continues_block(request: "Request[Any]", first: str) -> bool:
    """Whether a reply that starts with ``first`` goes on until ``END``."""
    return request.block and first.startswith(("KEY ", "STAT "))


def interpret(request: Request[T], lines: List[str]) -> T:
    """The caller's value for a reply, or the error the reply carries."""
    raise_for_error(lines[0])
    return request.parse(lines)
