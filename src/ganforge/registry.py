"""Name -> object registries for families, losses and datasets.

A registry lookup of an unknown name fails with the list of valid names, so the CLI can
print one helpful line. Modules register themselves with the decorator on import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import GanforgeError, suggest

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection; `kind` is used in error messages ("unknown loss 'x'")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return add

    def add(self, name: str, obj: T) -> T:
        return self.register(name)(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise GanforgeError(
                f"unknown {self.kind} {name!r}{suggest(name, self._items)}; choose from: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(k, self._items[k]) for k in self.names()]
