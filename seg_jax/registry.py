"""Name → factory registries, so configs can pick models, losses and datasets by name."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to objects whose lookup error lists the valid names.

    Usage::

            MODELS = Registry("model")

            @MODELS.register("unet")
            def unet(...): ...

            MODELS.get("unet")
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj
        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries))
            raise KeyError(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)


# Fields every flax Module has that are not options of a registered model or backbone.
MODULE_INTERNALS = frozenset({"parent", "name"})


def module_options(factory: Any) -> list[str]:
    """The keyword options of a registered dataclass (a flax Module class, or a `functools.partial` of one that fixes
    some): its fields but `MODULE_INTERNALS` and those the partial fixes, sorted."""
    fixed: dict[str, Any] = {}
    if isinstance(factory, functools.partial):
        factory, fixed = factory.func, factory.keywords
    return sorted({field.name for field in dataclasses.fields(factory)} - MODULE_INTERNALS - set(fixed))
