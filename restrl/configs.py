"""How restrl's step configs are written: documented dataclasses that pydantic validates.

Every setting a step reads lives in one `@config` class, each field with its help text, grouped
by concern with a comment line (TRL's `grpo_config.py` is the model)::

    @config
    class SamplingConfig:
        # --- generation ---
        n: int = Field(32, description="Samples per problem (the seed's --num_sample).")

The same class is what the code reads, what `restrl run --set` and `restrl train --set` edit,
and what the Prefect form shows (pydantic puts each `description` in the JSON schema).
Unknown keys are errors, so a misspelt `--set` fails instead of doing nothing.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass

T = TypeVar("T")

CONFIG = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


def config(cls: type[T] | None = None, *, frozen: bool = False) -> Any:
    """A documented, validated config dataclass (`dataclasses.replace`/`asdict` still work).

    Use as `@config` or `@config(frozen=True)`.
    """
    def wrap(klass: type[T]) -> type[T]:
        return pydantic_dataclass(config=CONFIG, frozen=frozen)(klass)  # type: ignore[return-value]

    return wrap if cls is None else wrap(cls)


@dataclass(frozen=True)
class FieldDoc:
    """One setting as `--help` lists it: dotted path, type, default and help text."""

    path: str
    type: str
    default: str
    help: str


def _fields_of(cls: type) -> dict[str, Any]:
    """name -> pydantic FieldInfo of a pydantic dataclass or BaseModel, else {}."""
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return dict(cls.model_fields)
    return dict(getattr(cls, "__pydantic_fields__", {}))


def _nested_config(annotation: Any) -> type | None:
    """The config class inside `annotation` (`X`, `X | None`), when it is one."""
    if _fields_of(annotation):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if _fields_of(arg):
                return arg
    return None


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " | ".join("None" if arg is type(None) else _type_name(arg)
                          for arg in typing.get_args(annotation))
    return re.sub(r"\b[\w.]+\.(\w+)", r"\1", str(annotation))


def _default_text(info: Any) -> str:
    if info.default_factory is not None:
        try:
            value = info.default_factory()
        except TypeError:  # factories that take the validated data
            return "(computed)"
        if dataclasses.is_dataclass(value) or isinstance(value, BaseModel):
            return "(see below)"
        return repr(value)
    return "(required)" if info.is_required() else repr(info.default)


def _listed_config(annotation: Any) -> type | None:
    """The config class of `list[X]`, when X is one."""
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return item if _fields_of(item) else None
    return None


def field_docs(cls: type, prefix: str = "") -> Iterator[FieldDoc]:
    """Every setting of `cls` in declaration order, nested configs expanded into dotted paths
    (`a.b.c`; a list of configs as `a.<i>.c`, its elements addressed by index)."""
    for name, info in _fields_of(cls).items():
        path = f"{prefix}{name}"
        nested, listed = _nested_config(info.annotation), _listed_config(info.annotation)
        yield FieldDoc(path, _type_name(info.annotation),
                       "" if nested or listed else _default_text(info), info.description or "")
        if nested is not None:
            yield from field_docs(nested, f"{path}.")
        elif listed is not None:
            yield from field_docs(listed, f"{path}.<i>.")


def undocumented(cls: type) -> list[str]:
    """Dotted paths of the settings that lack help text (the tests keep this empty)."""
    return [doc.path for doc in field_docs(cls) if not doc.help]
