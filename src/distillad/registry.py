"""Model registry: ``@register_model`` fills a dict, ``create_model(name, **kwargs)`` builds.

The registry imports nothing of the methods: the package imports ``distillad.models`` once
(timm's way), and each method file registers itself on import. A registered constructor is
timm-style, ``def rd(**kwargs) -> ReverseDistillation``; its return annotation names the class,
whose ``__init__`` signature (keywords, type hints, the paper's defaults) is the method's
configuration. A model records that signature bound with defaults applied (``model_kwargs``),
so a run rebuilds exactly the model it trained, even after a default changes.
"""

from __future__ import annotations

import inspect
import math
import operator
import types
import typing
from typing import Any, Callable, Literal

import torch.nn as nn

from .errors import ConfigError

__all__ = ["register_model", "create_model", "list_models", "model_entrypoint", "model_class", "model_signature",
           "model_type_hints", "bind_model_kwargs", "check_choices", "check_bounds", "keyword_bounds", "hint_bounds", "rebuild_model", "registered_name"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_CLASSES: dict[str, type] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model constructor under its function name (timm's convention)."""
    name = fn.__name__
    if name in _MODELS:
        raise RuntimeError(f"model {name!r} registered twice")
    _MODELS[name] = fn
    cls = typing.get_type_hints(fn).get("return")
    if isinstance(cls, type):
        _CLASSES[name] = cls
    return fn


def list_models() -> list[str]:
    """Names of all registered methods, sorted."""
    return sorted(_MODELS)


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def model_class(name: str) -> type:
    """The class a registered constructor builds (from its return annotation)."""
    model_entrypoint(name)
    if name not in _CLASSES:
        raise ConfigError(f"model {name!r}: its constructor has no class return annotation")
    return _CLASSES[name]


def registered_name(cls: type) -> str | None:
    """Registry name of a model class (the first name registered for exactly this class)."""
    return next((n for n, c in _CLASSES.items() if c is cls), None)


def _params(sig: inspect.Signature) -> list[inspect.Parameter]:
    return [p for p in sig.parameters.values() if p.name != "self"]


def model_signature(name: str) -> inspect.Signature:
    """The method's keywords: the constructor's own, or its class's when it takes ``**kwargs`` only."""
    fn = model_entrypoint(name)
    sig = inspect.signature(fn)
    if all(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()) and name in _CLASSES:
        sig = inspect.signature(_CLASSES[name].__init__)
        sig = sig.replace(parameters=_params(sig))
    return sig


def model_type_hints(name: str) -> dict[str, Any]:
    """Resolved type hints of the method's keywords (``from __future__ import annotations`` safe)."""
    fn = model_entrypoint(name)
    only_kwargs = all(p.kind == p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())
    target = _CLASSES[name].__init__ if only_kwargs and name in _CLASSES else fn
    hints = typing.get_type_hints(target)
    hints.pop("return", None)
    return hints


def bind_model_kwargs(cls: type, args: tuple = (), kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """``cls.__init__`` arguments bound with defaults applied → {keyword: value}; TypeError if they do not bind."""
    sig = inspect.signature(cls.__init__)
    bound = sig.bind(None, *args, **(kwargs or {}))
    bound.apply_defaults()
    out = dict(bound.arguments)
    out.pop(next(iter(sig.parameters)))  # self
    return out


def check_choices(cls: type, kwargs: dict[str, Any]) -> None:
    """Every keyword hinted ``Literal[...]`` (or ``Literal[...] | None``) must be one of its values:
    validated once here for every method, with a message naming the keyword and the bad value."""
    hints = typing.get_type_hints(cls.__init__)
    for k, v in kwargs.items():
        hint = hints.get(k)
        args = typing.get_args(hint)
        lits = args if typing.get_origin(hint) is Literal else tuple(
            x for a in args if typing.get_origin(a) is Literal for x in typing.get_args(a))
        if lits and v not in lits and not (v is None and type(None) in args):
            raise ConfigError(f"{k} must be one of {', '.join(map(repr, lits))}, got {v!r}")


_BOUNDS = {"gt": (operator.gt, ">"), "ge": (operator.ge, ">="), "lt": (operator.lt, "<"), "le": (operator.le, "<=")}


def keyword_bounds(cls: type) -> dict[str, list[tuple[str, float]]]:
    """{keyword: [(op, value), ...]} from ``Annotated[..., Gt(0)]``-style hints (``distillad.hints``);
    op is one of gt, ge, lt, le. Looks through ``X | None``."""
    return hint_bounds(typing.get_type_hints(cls.__init__, include_extras=True))


def hint_bounds(hints: dict[str, Any]) -> dict[str, list[tuple[str, float]]]:
    """``keyword_bounds`` of resolved hints (``typing.get_type_hints(..., include_extras=True)``)."""
    out: dict[str, list[tuple[str, float]]] = {}
    for k, hint in hints.items():
        cands = [hint, *typing.get_args(hint)] if typing.get_origin(hint) in (typing.Union, types.UnionType) \
            else [hint]
        for h in cands:
            for meta in getattr(h, "__metadata__", ()):
                parts = list(meta) if hasattr(meta, "__iter__") else [meta]  # Interval groups Gt/Ge/Lt/Le
                for m in parts:
                    for op in _BOUNDS:
                        if getattr(m, op, None) is not None:
                            out.setdefault(k, []).append((op, getattr(m, op)))
    return out


def _floats(v: Any) -> list[Any]:
    return [x for x in (v if isinstance(v, (tuple, list)) else [v]) if isinstance(x, (int, float))
            and not isinstance(x, bool)]


def check_bounds(cls: type, kwargs: dict[str, Any]) -> None:
    """Every float keyword finite, every bounded keyword (``distillad.hints``) inside its bounds, each
    element of a tuple; a ``ConfigError`` names the keyword and the value."""
    bounds = keyword_bounds(cls)
    for k, v in kwargs.items():
        for x in _floats(v):
            if isinstance(x, float) and not math.isfinite(x):
                raise ConfigError(f"{k} must be a finite number, got {v!r}")
            for op, lim in bounds.get(k, []):
                fn, sym = _BOUNDS[op]
                if not fn(x, lim):
                    what = "each value of " + k if isinstance(v, (tuple, list)) else k
                    raise ConfigError(f"{what} must be {sym} {lim}, got {v!r}")


def _coerce(value: Any, hint: Any) -> Any:
    """JSON gives lists where the signature says tuple: convert back (recursively for tuples of tuples)."""
    if isinstance(value, list) and (typing.get_origin(hint) is tuple or hint is tuple or _has_tuple(hint)):
        return tuple(value)
    return value


def _has_tuple(hint: Any) -> bool:
    return any(typing.get_origin(a) is tuple or a is tuple for a in typing.get_args(hint))


def _check_keywords(name: str, kwargs: dict[str, Any], sig: inspect.Signature) -> None:
    params = sig.parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        raise ConfigError(f"model {name!r} has no keyword {unknown[0]!r}; its keywords: {', '.join(params)}")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build method ``name`` with keyword overrides of its paper defaults.

    Unknown keywords raise ``ConfigError`` here, where they were written, not deep inside.
    """
    fn = model_entrypoint(name)
    _check_keywords(name, kwargs, model_signature(name))
    model = fn(**kwargs)
    model.model_name = name  # type: ignore[attr-defined]
    if getattr(model, "model_kwargs", None) is None:  # not a DistillationModel: record what we know
        model.model_kwargs = dict(kwargs)  # type: ignore[attr-defined]
    return model


def rebuild_model(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """Rebuild a model from its stored full keywords (``model.model_kwargs``), through its class so that
    preset keywords of a registered variant are not passed twice. Unknown keywords raise ``ConfigError``."""
    cls = model_class(name)
    sig = inspect.signature(cls.__init__)
    sig = sig.replace(parameters=_params(sig))
    _check_keywords(name, kwargs, sig)
    hints = typing.get_type_hints(cls.__init__)
    model = cls(**{k: _coerce(v, hints.get(k)) for k, v in kwargs.items()})
    model.model_name = name
    return model
