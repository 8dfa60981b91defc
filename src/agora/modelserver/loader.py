"""Finding models: by entry point of the ``deepaas.v2.model`` group, or by import path.

A model is what the entry point names, as DEEPaaS takes it: a module whose functions are the
interface (``get_metadata``, ``get_predict_args``, ``predict``, ``warm``, ``train``,
``get_train_args``, ``schema``), or an object with those methods. Unlike DEEPaaS, a class is
instantiated (with no arguments); DEEPaaS would call its methods unbound and fail.

A :class:`ModelRef` is what travels to worker processes, which load the model again.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

GROUP = "deepaas.v2.model"


class ModelNotFound(Exception):
    """No entry point or import path gives this model."""


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from: an entry-point ``name`` or an import path ``pkg.mod:obj``."""

    name: str
    import_path: str | None = None

    def load(self) -> Any:
        target = self.import_path
        if target is None:
            found = [ep for ep in entry_points(group=GROUP) if ep.name == self.name]
            if not found:
                raise ModelNotFound(f"no model '{self.name}' in entry-point group {GROUP}")
            target = found[0].value
        return instantiate(import_object(target))


def import_object(path: str) -> Any:
    """``pkg.mod:attr.sub`` (or ``pkg.mod``, a module) → the object."""
    module_name, _, attrs = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelNotFound(f"cannot import {module_name}: {exc}") from exc
    for attr in filter(None, attrs.split(".")):
        try:
            obj = getattr(obj, attr)
        except AttributeError as exc:
            raise ModelNotFound(f"{module_name} has no attribute {attrs}") from exc
    return obj


def instantiate(obj: Any) -> Any:
    return obj() if inspect.isclass(obj) else obj


def available() -> list[str]:
    """The names of the entry points of the group, in a stable order."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def refs(names: list[str] | None, import_paths: list[str] | None = None) -> list[ModelRef]:
    """The models to serve: the named entry points (all when none is named and no import
    path is given) and the import paths, each named after its last component."""
    found = available()
    chosen: list[ModelRef] = []
    for name in names or ([] if import_paths else found):
        if name not in found:
            known = ", ".join(found) or "none installed"
            raise ModelNotFound(f"no model '{name}' in entry-point group {GROUP} ({known})")
        chosen.append(ModelRef(name))
    for path in import_paths or []:
        name, _, given = path.partition("=")
        if not given:
            given, name = name, _name_of(name)
        chosen.append(ModelRef(name, given))
    if not chosen:
        raise ModelNotFound(f"no model to serve: none installed in entry-point group {GROUP}")
    return chosen


def _name_of(import_path: str) -> str:
    """``pkg.mod:obj`` → its last telling component: ``mypkg.api`` → ``mypkg``,
    ``agora.examples.embeddings:model`` → ``embeddings``."""
    components = import_path.replace(":", ".").split(".")
    generic = {"model", "models", "api", "main", "app"}
    return next((c for c in reversed(components) if c and c not in generic), components[0])
