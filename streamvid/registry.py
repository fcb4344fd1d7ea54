"""Name -> backend registries with lazy imports for optional backends."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from .errors import MissingDependencyError, UnknownBackendError

T = TypeVar("T")


@dataclass(frozen=True)
class _Lazy:
    module: str
    package: str | None  # the pip package it needs, for the error message
    extra: str | None


class Registry(Generic[T]):
    """Backends of one stage, by name.

    ``register(name)`` is a decorator for classes defined in an imported module;
    ``register_lazy(name, module, package=..., extra=...)`` names a module that registers
    the backend when imported, so optional dependencies are imported only when used.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}
        self._lazy: dict[str, _Lazy] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            self._items[name] = factory
            return factory

        return deco

    def register_lazy(self, name: str, module: str, *, package: str | None = None,
                      extra: str | None = None) -> None:
        self._lazy[name] = _Lazy(module, package, extra)

    def names(self) -> list[str]:
        return sorted(set(self._items) | set(self._lazy))

    def get(self, name: str) -> Callable[..., T]:
        if name in self._items:
            return self._items[name]
        lazy = self._lazy.get(name)
        if lazy is None:
            raise UnknownBackendError(
                f"unknown {self.kind} backend {name!r}; available: {', '.join(self.names())}"
            )
        try:
            importlib.import_module(lazy.module)
        except ModuleNotFoundError as err:
            if err.name and lazy.module.startswith(err.name):
                raise  # the backend's own module is missing: an installation bug, not user input
            missing = err.name or lazy.package or lazy.module
            raise MissingDependencyError(
                f"the {self.kind} backend {name!r}", lazy.package or missing, lazy.extra
            ) from err
        if name not in self._items:  # pragma: no cover - a programming error in the backend
            raise UnknownBackendError(f"module {lazy.module} did not register {self.kind} {name!r}")
        return self._items[name]

    def create(self, name: str, **cfg: Any) -> T:
        return self.get(name)(**cfg)
