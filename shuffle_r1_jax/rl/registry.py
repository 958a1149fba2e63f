"""A registry of named functions (advantage estimators, update-batch selectors), filled by decorators when their
module is imported; lookups name the unknown entry and the known ones."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry.

    Args:
      kind: what the entries are, for messages (e.g. "advantage estimator").
      missing: the exception type `get` raises for an unknown name.
    """

    def __init__(self, kind: str, missing: type[Exception] = ValueError):
        self.kind = kind
        self.missing = missing
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Registers `entry` under `name` and returns it.

        Raises:
          ValueError: `name` is already registered.
        """
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering the decorated function under `name` (see `add`)."""
        return lambda entry: self.add(name, entry)

    def remove(self, name: str) -> T:
        """Unregisters `name` and returns its entry (a user replacing a built-in one re-registers after)."""
        return self._entries.pop(name)

    def names(self) -> tuple[str, ...]:
        """Sorted registered names."""
        return tuple(sorted(self._entries))

    def get(self, name: str) -> T:
        """The entry registered under `name`.

        Raises:
          `missing`: `name` is not registered; the message lists the known names.
        """
        if name not in self._entries:
            raise self.missing(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._entries[name]
