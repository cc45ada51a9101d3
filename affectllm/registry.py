"""Named registries in one idiom: backends, textualizers, metrics, rewards, datasets, ASR engines, captioners.

A :class:`Registry` maps a name to either an object or a lazy ``"module:attr"`` string that is imported on first
:meth:`~Registry.get`, so listing names (the CLI's choices, ``--help``) never imports torch or an SDK. Every
registry fails the same way for a name it does not know: :class:`UnknownNameError`, whose message lists the
known names.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from affectllm.errors import InputError

T = TypeVar("T")
_MISSING: Any = object()


class UnknownNameError(InputError, KeyError):
    """A name no registry entry has. An :class:`InputError` (the CLI prints it without a traceback) and, for
    callers written against the dict registries this replaced, also a ``KeyError`` and a ``ValueError``."""

    def __init__(self, kind: str, name: object, known: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.known = known
        listed = ", ".join(known) if known else "(none registered)"
        super().__init__(None, f"unknown {kind} {name!r}; known {kind}s: {listed}")

    # KeyError.__str__ would quote the whole message; the InputError text reads better.
    __str__ = InputError.__str__


class Registry(Generic[T]):
    """``name -> object`` where an entry may be a ``"module:attr"`` string imported when first asked for.

    ``kind`` names what the registry holds ("backend", "metric") in the unknown-name message.
    """

    def __init__(self, kind: str, entries: dict[str, T | str] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        for name, entry in (entries or {}).items():
            self.register(name, entry)

    def register(self, name: str, entry: T | str, *, replace: bool = False) -> T | str:
        """Add ``entry`` under ``name``; a second registration of a name is a bug unless ``replace=True``
        (silently shadowing a backend or a metric would change results without a word)."""
        if name in self._entries and not replace and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def get(self, name: str, default: Any = _MISSING) -> T:
        """The object registered under ``name``, importing a lazy entry's module the first time.

        With ``default`` an unknown name returns it (as ``dict.get`` does) instead of raising."""
        if name not in self._entries:
            if default is not _MISSING:
                return default
            raise UnknownNameError(self.kind, name, self.names())
        entry = self._entries[name]
        if isinstance(entry, str):
            module, sep, attr = entry.partition(":")
            if not sep:
                raise ValueError(f"{self.kind} {name!r}: lazy entry {entry!r} is not 'module:attr'")
            # Resolved on every call, not memoised: the import is cached by Python, and a fresh getattr sees
            # a module attribute replaced later (a plugin, a test's monkeypatch).
            return getattr(importlib.import_module(module), attr)
        return entry

    def target(self, name: str) -> T | str:
        """The entry as registered (a ``"module:attr"`` string stays a string): no import."""
        if name not in self._entries:
            raise UnknownNameError(self.kind, name, self.names())
        return self._entries[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


__all__ = ["Registry", "UnknownNameError"]
