"""One generic registry per kind of component: datasets, methods, backbones.

A component registers itself with a decorator; its name is written once, as the class attribute
``name`` (or the function's ``__name__`` for factories). Built-in components register exactly like
outside ones: a module that is imported, or a ``module:attr`` string, or an entry point in the
``mtbench.<kind>`` group of an installed distribution.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import pkgutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Generic, TypeVar

from mtbench.core.errors import UserError

T = TypeVar("T")


def component_name(obj: object) -> str:
    """The registered name of a class (its ``name`` attribute) or a function (its ``__name__``)."""
    name = getattr(obj, "name", None)
    if isinstance(obj, type) and not isinstance(name, str):
        raise TypeError(f"{obj.__qualname__} needs a class attribute `name` (a string) to be registered")
    if not isinstance(name, str):
        name = getattr(obj, "__name__", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"cannot tell the name of {obj!r}: give it a `name` attribute")
    return name


def describe(obj: object) -> str:
    """One-line description: ``description`` attribute, else the docstring's first line."""
    text = getattr(obj, "description", None) or (obj.__doc__ or "").strip()
    return text.strip().splitlines()[0] if text and text.strip() else ""


def import_file(path: Path) -> ModuleType:
    """Import a Python file once per resolved path (a second request returns the same module)."""
    path = path.resolve()
    module_name = "mtbench_user_" + hashlib.sha1(str(path).encode()).hexdigest()[:12] + "_" + path.stem
    if module_name in sys.modules:
        return sys.modules[module_name]
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise UserError(f"cannot import '{path}': not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def load_object(spec: str) -> object:
    """Import ``"package.module:attr"`` (or a file path ``"path/to/file.py:attr"``) and return attr."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"'{spec}' is not a 'module:attr' reference; write it as e.g. 'mypkg.methods:MyMethod'")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise UserError(f"file '{path}' does not exist; give the path of a Python file, e.g. 'methods/mine.py:Mine'")
        module = import_file(path)
    else:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise UserError(f"cannot import module '{module_name}' ({exc}); check the spelling or install it") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UserError(f"module '{module_name}' has no attribute '{attr}'") from None


class Registry(Generic[T]):
    """A named collection of components of one kind.

    Args:
        kind: plural noun used in messages and in the entry-point group ``mtbench.<kind>``.
        builtins: modules imported the first time the registry is read, so that their
            ``@REGISTRY.register`` decorators run; ``"package.*"`` imports every module of a package.
    """

    def __init__(self, kind: str, builtins: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._builtins = builtins
        self._items: dict[str, T] = {}
        self._loaded = False
        #: ``prefix -> factory``: ``get("prefix:rest")`` builds a component from ``rest`` (e.g. ``folder:PATH``)
        self._prefixes: dict[str, Callable[[str], T]] = {}
        #: callables returning ``{name: component}``, read at every lookup (e.g. a user's config file)
        self._sources: list[Callable[[], dict[str, T]]] = []

    # -- writing --------------------------------------------------------------------------------
    def register(self, obj: T) -> T:
        """Register ``obj`` under its own name; usable as a class or function decorator.

        Registering the same object twice is a no-op; a different object under a taken name raises.
        """
        name = component_name(obj)
        existing = self._items.get(name)
        if existing is not None and existing is not obj:
            raise UserError(
                f"{self.kind[:-1]} name '{name}' is already registered by {_where(existing)}; "
                f"choose another name for {_where(obj)}"
            )
        self._items[name] = obj
        return obj

    def add_prefix(self, prefix: str, factory: Callable[[str], T]) -> None:
        """Route ``get("PREFIX:rest")`` to ``factory(rest)``, before ``module:attr`` loading."""
        self._prefixes[prefix] = factory

    def add_source(self, source: Callable[[], dict[str, T]]) -> None:
        """Components that come and go with a file outside the code (read at every lookup); a
        registered (built-in) name wins over one of theirs."""
        self._sources.append(source)

    def _all(self) -> dict[str, T]:
        self._load()
        found: dict[str, T] = {}
        for source in self._sources:
            found.update(source())
        found.update(self._items)
        return found

    def register_from(self, spec: str) -> T:
        """Load ``module:attr`` (or ``file.py:attr``) and register it; return the object."""
        obj = load_object(spec)
        self.register(obj)  # type: ignore[arg-type]
        return obj  # type: ignore[return-value]

    # -- reading --------------------------------------------------------------------------------
    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._builtins:
            if module.endswith(".*"):  # every module of a package: a new component is a new file there
                package = importlib.import_module(module[:-2])
                for info in pkgutil.iter_modules(package.__path__):
                    importlib.import_module(f"{package.__name__}.{info.name}")
            else:
                importlib.import_module(module)
        for entry in importlib.metadata.entry_points(group=f"mtbench.{self.kind}"):
            self.register(entry.load())

    def get(self, name: str) -> T:
        """The component called ``name``; a ``module:attr`` string loads and registers one."""
        self._load()
        if name in self._items:
            return self._items[name]
        prefix, sep, rest = name.partition(":")
        if sep and prefix in self._prefixes:
            return self._prefixes[prefix](rest)
        known = self._all()
        if name in known:
            return known[name]
        if ":" in name:
            return self.register_from(name)
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise UserError(
            f"unknown {self.kind[:-1]} '{name}': {hint}known {self.kind}: {', '.join(sorted(known))} "
            f"(see `mtbench ls`; outside ones load as 'module:attr')"
        )

    def names(self) -> list[str]:
        return sorted(self._all())

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._all().items()))

    def builtin(self, name: str) -> bool:
        """Whether ``name`` is registered in code (a built-in or an installed component), not by a source."""
        self._load()
        return name in self._items

    def __contains__(self, name: object) -> bool:
        return name in self._all()

    def unregister(self, name: str) -> None:
        """Remove a component (for tests and interactive sessions)."""
        self._items.pop(name, None)


def _where(obj: object) -> str:
    module = getattr(obj, "__module__", "?")
    qualname = getattr(obj, "__qualname__", repr(obj))
    return f"{module}.{qualname}"

