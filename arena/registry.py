"""A name -> object registry, the way lm-eval registers tasks and PEFT its tuners.

Methods, objectives and targets each keep one `Registry`; a new entry is one decorated class in
one new module, and everything that lists or tests them iterates over the registry.
"""

from __future__ import annotations

from typing import Callable, Dict, Generic, Iterator, TypeVar

from arena.errors import ConfigError, suggest

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str, field: str | None = None) -> T:
        if name not in self._items:
            allowed = f"known {self.kind}s: {', '.join(sorted(self._items))}{suggest(str(name), self._items)}"
            raise ConfigError(field or self.kind, name, allowed)
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
