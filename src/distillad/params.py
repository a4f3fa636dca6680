"""Keyword hints as the command line and JSON Schema see them: ``Param`` (kind, None allowed, choices).

A method's constructor keywords (``model_params``) and the run settings (``distillad.settings``) are
both plain typed signatures; this module reads their hints and ``distillad.hints`` bounds once, for
the CLI flags (``cli_flags``), the config files (``config``) and run.json (``run_schema``).
"""

from __future__ import annotations

import collections.abc
import inspect
import pathlib
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

from .registry import keyword_bounds, model_class, model_signature, model_type_hints

__all__ = ["Param", "param_spec", "model_params", "param_schema", "bounded", "model_kwargs_schema", "coerce",
           "typed_kwargs"]

_JSON_TYPE = {"bool": "boolean", "int": "integer", "float": "number", "str": "string"}


@dataclass(frozen=True)
class Param:
    """One method keyword as the CLI and the schema see it: a kind, whether None is allowed, details.

    kind: bool | int | float | str | choice | tuple | any (any: not expressible, no flag, unchecked).
    ``items``: element kinds of a tuple, one per position, or one for a variadic tuple.
    """

    name: str
    kind: str
    default: Any = None
    nullable: bool = False
    choices: tuple[Any, ...] = ()
    items: tuple[str, ...] = ()
    variadic: bool = False


def _scalar(hint: Any) -> str | None:
    if hint is bool:
        return "bool"
    if hint is int:
        return "int"
    if hint is float:
        return "float"
    if hint is str or (isinstance(hint, type) and issubclass(hint, pathlib.PurePath)):
        return "str"
    return None


def _from_default(default: Any) -> dict[str, Any]:
    """No usable hint: guess from the default (a bare ``x=3``)."""
    if default is None or default is inspect.Parameter.empty:
        return {"kind": "str", "nullable": default is None}
    if isinstance(default, (tuple, list)):
        kinds = {_scalar(type(v)) for v in default} or {"str"}
        return {"kind": "tuple", "items": (kinds.pop() if len(kinds) == 1 else "str",), "variadic": True} \
            if None not in kinds else {"kind": "any"}
    return {"kind": _scalar(type(default)) or "any"}


def _describe(hint: Any, default: Any) -> dict[str, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is None or hint is Any or hint is inspect.Parameter.empty:
        return _from_default(default)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = [_describe(a, None) for a in rest]
        kinds = {d["kind"] for d in inner}
        if len(inner) == 1:
            out = inner[0]
        elif kinds == {"choice"}:
            out = {"kind": "choice", "choices": tuple(c for d in inner for c in d["choices"])}
        elif kinds == {"str"} or kinds == {"int", "float"}:
            out = {"kind": kinds.pop() if len(kinds) == 1 else "float"}
        else:
            out = {"kind": "any"}
        return {**out, "nullable": out.get("nullable", False) or len(rest) < len(args)}
    if origin is Literal:
        return {"kind": "choice", "choices": args}
    if origin is tuple and args and args != ((),):
        variadic = len(args) == 2 and args[1] is Ellipsis
        items = tuple(_scalar(a) for a in (args[:1] if variadic else args))
        return {"kind": "tuple", "items": items, "variadic": variadic} if None not in items else {"kind": "any"}
    if origin in (list, collections.abc.Sequence, collections.abc.MutableSequence) and len(args) == 1:
        item = _scalar(args[0])
        return {"kind": "tuple", "items": (item,), "variadic": True} if item else {"kind": "any"}
    if hint in (tuple, list) or origin in (tuple, list, collections.abc.Sequence):
        return _from_default(default) if isinstance(default, (tuple, list)) else {"kind": "any"}
    kind = _scalar(hint)
    return {"kind": kind} if kind else {"kind": "any"}


def param_spec(name: str, hint: Any, default: Any = inspect.Parameter.empty) -> Param:
    """What a keyword's type hint (or, without one, its default) allows, in CLI/schema terms."""
    d = _describe(hint, default)
    if default is None:
        d["nullable"] = True
    return Param(name=name, default=None if default is inspect.Parameter.empty else default, **d)


def model_params(model: str) -> list[Param]:
    """Every keyword of registered method ``model`` (not ``*args``/``**kwargs``), in signature order."""
    hints = model_type_hints(model)
    return [param_spec(p.name, hints.get(p.name), p.default) for p in model_signature(model).parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def param_schema(p: Param) -> dict[str, Any]:
    if p.kind == "any":
        return {}
    if p.kind == "choice":
        return {"enum": [*p.choices, *([None] if p.nullable else [])]}
    if p.kind == "tuple":
        s: dict[str, Any] = {"type": "array"}
        if p.variadic:
            s.update(items={"type": _JSON_TYPE[p.items[0]]}, minItems=1)
        else:
            s.update(prefixItems=[{"type": _JSON_TYPE[k]} for k in p.items], minItems=len(p.items),
                     maxItems=len(p.items))
    else:
        s = {"type": _JSON_TYPE[p.kind]}
    if p.nullable:
        s["type"] = [s["type"], "null"]
    return s


_SCHEMA_BOUND = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}


def bounded(schema: dict[str, Any], bounds: list[tuple[str, float]]) -> dict[str, Any]:
    """A keyword's schema with its ``distillad.hints`` bounds (on each item of an array)."""
    if not bounds or not schema:
        return schema
    extra = {_SCHEMA_BOUND[op]: v for op, v in bounds}
    out = dict(schema)
    if "prefixItems" in out:
        out["prefixItems"] = [{**it, **extra} for it in out["prefixItems"]]
    elif "items" in out:
        out["items"] = {**out["items"], **extra}
    else:
        out.update(extra)
    return out


def model_kwargs_schema(model: str) -> dict[str, Any]:
    """The JSON Schema of method ``model``'s keywords (the ``model_kwargs`` of a config file and of run.json)."""
    bounds = keyword_bounds(model_class(model))
    return {"type": "object", "additionalProperties": False,
            "properties": {p.name: bounded(param_schema(p), bounds.get(p.name, [])) for p in model_params(model)}}


def coerce(value: Any, p: Param) -> Any:
    """A schema-valid plain value → the hinted Python type (lists → tuples, ints → floats)."""
    if value is None or p.kind in ("any", "choice", "bool", "str"):
        return value
    if p.kind == "tuple":
        kinds = p.items * len(value) if p.variadic else p.items
        return tuple(coerce(v, Param(p.name, k)) for v, k in zip(value, kinds))
    return float(value) if p.kind == "float" else int(value)


def typed_kwargs(model: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Method keywords read from YAML/JSON in their hinted types."""
    params = {p.name: p for p in model_params(model)}
    return {k: coerce(v, params[k]) if k in params else v for k, v in kwargs.items()}
