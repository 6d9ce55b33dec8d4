"""The exception tree is defined and drawn in one place: herald.core.errors."""

from __future__ import annotations

import importlib
import pkgutil

import herald
from herald.core import errors
from herald.core.errors import HeraldError


def _every_module() -> None:
    for module in pkgutil.walk_packages(herald.__path__, "herald."):
        if ".migrations" not in module.name and module.name != "herald.schemas":
            importlib.import_module(module.name)


def _subclasses(cls: type[HeraldError]) -> set[type[HeraldError]]:
    found: set[type[HeraldError]] = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_every_error_is_defined_and_drawn_in_core_errors() -> None:
    _every_module()
    classes = _subclasses(HeraldError)
    assert len(classes) > 10
    assert {c.__name__ for c in classes if c.__module__ != errors.__name__} == set()
    drawing = errors.__doc__ or ""
    assert {c.__name__ for c in classes if c.__name__ not in drawing} == set()


def test_only_passing_conditions_are_retriable() -> None:
    assert {c.__name__ for c in _subclasses(HeraldError) if c.retriable} == {"ConcurrentWrite"}
