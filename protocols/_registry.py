"""The schema registry: message classes by ``name@version``, and upcasters.

Evolution rules (enforced where they can be, documented where they cannot):

1. A message type is named once, ``name``, and versioned with an int from 1.
2. Within a version, a new field needs a default, so an old sender still
   validates.  A field's type never changes within a name.
3. A breaking change is a new version.  The registry only resolves an older
   version when an upcaster chain ``v -> v+1 -> ... -> latest`` exists; the
   upcaster is a pure function from the old body (a dict) to the new one.
4. An unknown name or version is refused with :class:`UnknownMessageType`
   naming what is known, never guessed at.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .exceptions import MessageValidationError, RegistrationError, UnknownMessageType

if TYPE_CHECKING:
    from ._message import Message

__all__ = ["Registry", "default_registry"]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def split_tag(tag: str) -> tuple[str, int]:
    """``"name@3"`` -> ``("name", 3)``; raises UnknownMessageType on a bad tag."""
    if not isinstance(tag, str):
        raise UnknownMessageType(f"message type tag must be a string, got {type(tag).__name__}", tag=repr(tag))
    name, sep, version = tag.rpartition("@")
    # ASCII digits only: str.isdigit() also passes "²" (which int() refuses) and
    # "١" (which int() reads as 1, so a foreign spelling would alias a real tag).
    if not sep or not name or not (version.isascii() and version.isdigit()):
        raise UnknownMessageType(f"malformed message type tag {tag!r}; expected 'name@version'", tag=tag)
    return name, int(version)


class Registry:
    """Message classes by name and version, plus the upcasters between versions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._classes: dict[tuple[str, int], type[Message]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._latest: dict[str, type[Message]] = {}
        # tag -> class, for tags that name their name's latest version: the
        # hot path of ``resolve``.  Replaced (not mutated) on every register,
        # so a resolve racing a register can only fill a dict nobody reads.
        self._current: dict[str, type[Message]] = {}

    def register(self, cls: type[Message]) -> None:
        key = (cls.__message_name__, cls.__message_version__)
        with self._lock:
            old = self._classes.get(key)
            # Re-registering the same class (a module imported again, a class
            # shipped by value to a Ray worker) replaces it; a different class
            # under a taken tag is a declaration error.
            if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
                raise RegistrationError(
                    f"message type {cls.type_tag()!r} is already registered to "
                    f"{old.__module__}.{old.__qualname__}",
                    tag=cls.type_tag(),
                )
            self._classes[key] = cls
            latest = self._latest.get(key[0])
            if latest is None or latest.__message_version__ <= key[1]:
                self._latest[key[0]] = cls
            self._current = {}

    def upcaster(self, name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: register ``fn(body_v) -> body_v+1`` for ``name``."""

        def decorate(fn: Upcaster) -> Upcaster:
            if from_version < 1:
                raise RegistrationError(f"upcaster for {name!r} from version {from_version}: versions start at 1")
            with self._lock:
                self._upcasters[(name, from_version)] = fn
            return fn

        return decorate

    def latest(self, name: str) -> type[Message] | None:
        return self._latest.get(name)

    def known(self) -> list[str]:
        return sorted(f"{n}@{v}" for (n, v) in self._classes)

    def resolve(self, tag: str, body: Any) -> tuple[type[Message], Any]:
        """Return the latest class of ``tag``'s name and the body upcast to it.

        A receiver always handles the newest registered version: older bodies
        go through the upcaster chain first.

        Raises UnknownMessageType when the name is unknown, or the version is
        neither registered nor reachable by upcasters.
        """
        current = self._current
        cls = current.get(tag) if type(tag) is str else None
        if cls is not None:
            return cls, body  # the common case: sender and receiver agree
        hit = _cached_split(tag)
        if hit is not None:
            latest = self._latest.get(hit[0])
            if latest is not None and latest.__message_version__ == hit[1]:
                if len(current) < 4096:
                    current[tag] = latest
                return latest, body
        name, version = split_tag(tag)
        latest = self._latest.get(name)
        if latest is None or version > latest.__message_version__:
            raise UnknownMessageType(
                f"unknown message type {tag!r}; known: {', '.join(self.known()) or 'none'}",
                tag=tag,
                known=self.known(),
            )
        if not isinstance(body, dict):
            raise MessageValidationError(
                f"{tag}: body must be a map to upcast, got {type(body).__name__}",
                tag=tag,
                errors=[{"loc": "", "msg": "body must be a map", "type": "dict_type"}],
            )
        v = version
        while v < latest.__message_version__:
            step = self._upcasters.get((name, v))
            if step is None:
                raise UnknownMessageType(
                    f"message type {tag!r} is older than {latest.type_tag()!r} and no upcaster "
                    f"from version {v} is registered; known: {', '.join(self.known())}",
                    tag=tag,
                    known=self.known(),
                )
            body = step(dict(body))
            v += 1
        return latest, body


_SPLIT_CACHE: dict[str, tuple[str, int]] = {}


def _cached_split(tag: Any) -> tuple[str, int] | None:
    """Fast path for hot tags; returns None for anything malformed."""
    if not isinstance(tag, str):
        return None
    hit = _SPLIT_CACHE.get(tag)
    if hit is None:
        try:
            hit = split_tag(tag)
        except UnknownMessageType:
            return None
        if len(_SPLIT_CACHE) < 4096:
            _SPLIT_CACHE[tag] = hit
    return hit


default_registry = Registry()
