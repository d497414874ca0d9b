"""The :class:`Lease` value: what a worker holds while it uses a key.

A lease is a plain immutable value so that it can be passed between threads, stored, and handed back to
:meth:`keypool.Client.release` or :meth:`keypool.Client.touch`, which send its token so that they act only
on this lease and never on a later holder's.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["Lease"]


class Lease:
    """A leased key: its ``id``, the lease's fencing ``token`` and the key's ``secret``.

    ``token`` is None for a lease taken with a plain ``GET`` (:meth:`keypool.Client.get`), ``secret`` is
    None for a key the daemon minted (``GEN``) rather than one added with a secret (``ADD``).
    ``str(lease)`` is the secret when there is one, else the id: the value a worker passes to its API.
    The secret never appears in ``repr()``, so logging a lease does not leak it.
    """

    __slots__ = ("_id", "_token", "_secret")
    _id: str
    _token: Optional[int]
    _secret: Optional[str]

    def __init__(self, id: str, token: Optional[int] = None, secret: Optional[str] = None) -> None:
        object.__setattr__(self, "_id", id)
        object.__setattr__(self, "_token", token)
        object.__setattr__(self, "_secret", secret)

    @property
    def id(self) -> str:
        """The key's 24-character id."""
        return self._id

    @property
    def token(self) -> Optional[int]:
        """The lease's fencing token, or None for a lease taken without one (``GET``)."""
        return self._token

    @property
    def secret(self) -> Optional[str]:
        """The key's secret, or None for a key without one."""
        return self._secret

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Lease is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Lease is immutable")

    def __str__(self) -> str:
        return self._secret if self._secret is not None else self._id

    def __repr__(self) -> str:
        secret = "None" if self._secret is None else "'***'"
        return f"Lease(id={self._id!r}, token={self._token!r}, secret={secret})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Lease):
            return NotImplemented
        return (self._id, self._token, self._secret) == (other._id, other._token, other._secret)

    def __hash__(self) -> int:
        return hash((self._id, self._token, self._secret))
