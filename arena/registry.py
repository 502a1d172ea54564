"""A name -> object registry, the way lm-eval registers tasks and PEFT its tuners.

Methods, objectives and targets each keep one `Registry`; a new entry is one decorated class in
one new module, and everything that lists or tests them iterates over the registry.

A registry given a `package` finds its built-in entries itself: on the first lookup it imports
every public module of that package (by name, like lm-eval's task index), and each module
registers its classes as it is imported. So the code that looks components up (the config
layer) depends on the registry, never on the component modules, and a new module in the package
is picked up without being listed anywhere.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Dict, Generic, Iterator, Optional, TypeVar

from arena.errors import ConfigError, suggest

T = TypeVar("T")


def import_modules(package: str, skip: tuple[str, ...] = ()) -> None:
    """Import every public module of `package` (not starting with "_", not in `skip`), so that each
    registers what it defines: how a package's built-in components are found without a list."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_") and info.name not in skip:
            importlib.import_module(f"{package}.{info.name}")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: Optional[str] = None):
        self.kind = kind
        self.package = package
        self._items: Dict[str, T] = {}
        self._discovered = package is None
        self._discovering = False

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def discover(self) -> None:
        """Import every public module of `package` once (each registers its entries on import).

        A module that looks the registry up while discovery is importing it sees the entries
        registered so far; a module that fails to import leaves the registry undiscovered, so
        the next lookup raises the same error instead of silently missing entries.
        """
        if self._discovered or self._discovering:
            return
        self._discovering = True
        try:
            import_modules(self.package)
            self._discovered = True
        finally:
            self._discovering = False

    def get(self, name: str, field: str | None = None) -> T:
        self.discover()
        if name not in self._items:
            allowed = f"known {self.kind}s: {', '.join(sorted(self._items))}{suggest(str(name), self._items)}"
            raise ConfigError(field or self.kind, name, allowed)
        return self._items[name]

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
