"""A training run as one YAML file: ``distillad train --print-config`` writes it, ``--config`` runs it.

The file has fixed sections (``data``, ``train``, ``calibration``, ``out``) and ``model_kwargs``,
whose keys and types come from the method's constructor signature and type hints, so a new
method needs no config code. Files are read with PyYAML and checked with a JSON Schema built
from those hints; every problem is a ``ConfigError`` naming the file and the key.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import pathlib
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .calibration import METHODS as CALIBRATION_METHODS
from .data.resize import RESIZE_MODES
from .errors import ConfigError
from .synthesis.foreground import FOREGROUND_METHODS

__all__ = ["Param", "param_spec", "model_params", "config_schema", "load_config", "peek_model",
           "config_from_args", "dump_config", "train_kwargs", "FLAG_PATHS", "FOREGROUNDS", "LOGGERS",
           "RESIZE_MODES"]

FOREGROUNDS = FOREGROUND_METHODS
LOGGERS = ("tensorboard", "mlflow")

#: flat ``api.train`` keyword (= CLI flag) → (section, key) in the file; defaults are api.train's
FLAG_PATHS: dict[str, tuple[str, ...]] = {
    "model": ("model",), "out": ("out",),
    "data": ("data", "path"), "category": ("data", "category"), "layout": ("data", "layout"),
    "val_fraction": ("data", "val_fraction"), "split_seed": ("data", "split_seed"),
    "textures": ("data", "textures"), "foreground": ("data", "foreground"), "resize": ("data", "resize"),
    "epochs": ("train", "epochs"), "batch_size": ("train", "batch_size"), "image_size": ("train", "image_size"),
    "seed": ("train", "seed"), "device": ("train", "device"), "num_workers": ("train", "num_workers"),
    "precision": ("train", "precision"), "logger": ("train", "logger"), "k_sigma": ("calibration", "k_sigma"),
    "threshold_method": ("calibration", "method"), "quantile": ("calibration", "quantile"),
    "threshold": ("calibration", "threshold"), "pixel_threshold": ("calibration", "pixel_threshold"),
    "target_fpr": ("calibration", "target_fpr"),
}
DEFAULTS: dict[str, Any] = {
    "model": None, "out": None, "data": None, "category": None, "layout": None, "val_fraction": 0.1,
    "split_seed": 0, "textures": None, "foreground": None, "resize": "squash", "epochs": None, "batch_size": None,
    "image_size": None, "seed": 0, "device": "auto", "num_workers": 0, "precision": "fp32", "logger": None,
    "k_sigma": 3.0,
    "threshold_method": "sigma", "quantile": 0.995, "threshold": None, "pixel_threshold": None, "target_fpr": None,
}
SECTIONS = ["model", "model_kwargs", "data", "train", "calibration", "out"]
_MIN1 = {"minimum": 1}
_FIXED_SCHEMA: dict[str, dict[str, Any]] = {
    "data": {"path": {"type": "string"}, "category": {"type": ["string", "null"]},
             "layout": {"type": ["string", "null"]},
             "val_fraction": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
             "split_seed": {"type": "integer"}, "textures": {"type": ["string", "null"]},
             "foreground": {"enum": [*FOREGROUNDS, None]}, "resize": {"enum": list(RESIZE_MODES)}},
    "train": {"epochs": {"type": ["integer", "string", "null"], "minimum": 1, "pattern": "^auto$"},  # N or auto
              "batch_size": {"type": ["integer", "null"], **_MIN1},
              "image_size": {"type": ["integer", "null"], "minimum": 32, "maximum": 4096}, "seed": {"type": "integer"},
              "device": {"type": "string"}, "num_workers": {"type": "integer", "minimum": 0},
              "precision": {"enum": ["fp32", "bf16"]}, "logger": {"enum": [*LOGGERS, None]}},
    "calibration": {"k_sigma": {"type": "number", "minimum": 0}, "method": {"enum": list(CALIBRATION_METHODS)},
                    "quantile": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                    "threshold": {"type": ["number", "null"]}, "pixel_threshold": {"type": ["number", "null"]},
                    "target_fpr": {"type": ["number", "null"], "exclusiveMinimum": 0, "exclusiveMaximum": 1}},
}
_JSON_TYPE = {"bool": "boolean", "int": "integer", "float": "number", "str": "string"}


# ----------------------------------------------------------------------------- hints → Param
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
    from .registry import model_signature, model_type_hints
    hints = model_type_hints(model)
    return [param_spec(p.name, hints.get(p.name), p.default) for p in model_signature(model).parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


# ----------------------------------------------------------------------------- schema
def _param_schema(p: Param) -> dict[str, Any]:
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


def _bounded(schema: dict[str, Any], bounds: list[tuple[str, float]]) -> dict[str, Any]:
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


def config_schema(model: str, complete: bool = False) -> dict[str, Any]:
    """JSON Schema of a config for ``model``; ``complete`` also requires model, data.path and out."""
    from .registry import keyword_bounds, list_models, model_class

    def section(props: dict[str, Any], required: list[str] = ()) -> dict[str, Any]:
        return {"type": "object", "properties": props, "additionalProperties": False,
                **({"required": list(required)} if complete and required else {})}

    bounds = keyword_bounds(model_class(model))
    props = {"model": {"enum": list_models()},
             "model_kwargs": section({p.name: _bounded(_param_schema(p), bounds.get(p.name, []))
                                      for p in model_params(model)}),
             **{k: section(v, ["path"] if k == "data" else []) for k, v in _FIXED_SCHEMA.items()},
             "out": {"type": "string"}}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            **section(props, ["model", "data", "out"] if complete else [])}


def _param_schema_for(model: str) -> dict[str, Any]:
    """The ``model_kwargs`` section's schema of ``model`` (``run_schema`` checks run.json with it)."""
    return config_schema(model)["properties"]["model_kwargs"]


def _key_error(source: str, err: Any, schema: dict[str, Any]) -> str:
    path = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "additionalProperties":
        known = list(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(known))[0]
        near = difflib.get_close_matches(str(extra), known, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else f" (known: {', '.join(known)})"
        return f"{source}: unknown key {'.'.join([*map(str, err.absolute_path), str(extra)])!r}{hint}"
    if err.validator == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        flag = {"path": "--data", "model": "--model", "data": "--data", "out": "--out"}.get(missing, missing)
        where = f"{path}.{missing}" if path else missing
        return f"{source}: missing {where!r} (give {flag} or set it in the config file)"
    flat = next((k for k, v in FLAG_PATHS.items() if ".".join(v) == path), None)
    if flat is None and path.startswith("model_kwargs."):
        flat = path.split(".", 2)[1]
    flag = f" (--{flat.replace('_', '-')})" if flat else ""
    yaml11 = " (YAML reads unquoted yes/no/on/off as booleans: quote it)" if isinstance(err.instance, bool) else ""
    return f"{source}: {path or '<top level>'}{flag}: {err.message}{yaml11}"


def _validate(cfg: Any, model: str, source: str, complete: bool = False) -> None:
    import jsonschema
    schema = config_schema(model, complete)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(cfg),
                    key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path]))
    if errors:
        raise ConfigError(_key_error(source, errors[0], schema))


# ----------------------------------------------------------------------------- YAML in and out
class _Loader(yaml.SafeLoader):
    """safe_load, but ``1e-3`` is a float (YAML 1.1 wants ``1.0e-3``; users write the former)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _read_yaml(path: str | Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file ({e.strerror or e})") from None
    try:
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path}{line}: YAML syntax error: {problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config file is a mapping (model:, data:, train: ...), not {type(raw).__name__}")
    return raw


def peek_model(path: str | Path) -> str | None:
    """The ``model:`` a config file names (the CLI needs it to know the method's flags)."""
    from .registry import list_models
    model = _read_yaml(path).get("model")
    if isinstance(model, str) and model not in list_models():
        raise ConfigError(f"{path}: model: unknown model {model!r}; available: {', '.join(list_models())}")
    return model if isinstance(model, str) else None


def _coerce(value: Any, p: Param) -> Any:
    """A schema-valid plain value → the hinted Python type (lists → tuples, ints → floats)."""
    if value is None or p.kind in ("any", "choice", "bool", "str"):
        return value
    if p.kind == "tuple":
        kinds = p.items * len(value) if p.variadic else p.items
        return tuple(_coerce(v, Param(p.name, k)) for v, k in zip(value, kinds))
    return float(value) if p.kind == "float" else int(value)


def _typed(model: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    params = {p.name: p for p in model_params(model)}
    return {k: _coerce(v, params[k]) if k in params else v for k, v in kwargs.items()}


def load_config(path: str | Path, model: str | None = None) -> dict[str, Any]:
    """Read and check a (possibly partial) config file; ``model`` overrides the file's ``model:``.

    Returns the nested dict with values in their hinted types (tuples, floats).
    """
    from .registry import list_models
    raw = _read_yaml(path)
    model = model or raw.get("model")
    for key in raw:  # before the method is known: a misspelt 'model:' is reported as that
        if key not in SECTIONS:
            near = difflib.get_close_matches(str(key), SECTIONS, n=1)
            raise ConfigError(f"{path}: unknown key {key!r}" + (f" (did you mean {near[0]!r}?)" if near else
                                                                 f" (known: {', '.join(SECTIONS)})"))
    if model is None:
        raise ConfigError(f"{path}: no method: set 'model:' in the file or pass --model")
    if model not in list_models():
        raise ConfigError(f"{path}: model: unknown model {model!r}; available: {', '.join(list_models())}")
    _validate({**raw, "model": model}, model, str(path))
    if isinstance(raw.get("model_kwargs"), dict):
        raw["model_kwargs"] = _typed(model, raw["model_kwargs"])
    for k in ("val_fraction", "k_sigma", "quantile", "threshold", "pixel_threshold", "target_fpr"):
        sec = "data" if k == "val_fraction" else "calibration"
        if (raw.get(sec) or {}).get(k) is not None:
            raw[sec][k] = float(raw[sec][k])
    return raw


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, pathlib.PurePath):
        return str(value)
    return value


def dump_config(cfg: dict[str, Any]) -> str:
    """The config as YAML (tuples as lists), in the file's section order."""
    from . import __version__
    body = yaml.safe_dump({k: _plain(cfg[k]) for k in SECTIONS if k in cfg}, sort_keys=False, allow_unicode=True)
    return f"# distillad {__version__}; run with: distillad train --config THIS_FILE.yaml\n{body}"


# ----------------------------------------------------------------------------- flags + file → config
def config_from_args(model: str, flags: dict[str, Any], model_kwargs: dict[str, Any] | None = None,
                     base: dict[str, Any] | None = None, source: str = "command line") -> dict[str, Any]:
    """The FULL config: api.train defaults ← ``base`` (a loaded file) ← ``flags`` given on the command line.

    ``flags`` are flat api.train keywords (``FLAG_PATHS``); ``model_kwargs`` the method keywords given as
    flags. Method keywords get their defaults applied, epochs/batch_size/image_size the method's
    ``train_defaults``; the result is checked against ``config_schema(model, complete=True)``.
    """
    from .registry import bind_model_kwargs, model_class
    base = base or {}
    unknown = set(flags) - set(FLAG_PATHS)
    if unknown:
        raise ConfigError(f"{source}: not a train setting: {', '.join(sorted(unknown))}")
    flat = dict(DEFAULTS)
    for k, path in FLAG_PATHS.items():
        section = base if len(path) == 1 else base.get(path[0])
        if isinstance(section, dict) and path[-1] in section:
            flat[k] = section[path[-1]]
    flat.update(flags)
    if flat["target_fpr"] is not None and "threshold_method" not in flags and "method" not in (base.get("calibration") or {}):
        flat["threshold_method"] = "fpr"  # --target-fpr alone chooses the method it is the parameter of
    flat["model"] = model
    cls = model_class(model)
    kwargs = {**(base.get("model_kwargs") or {}), **(model_kwargs or {})}
    try:
        full = bind_model_kwargs(cls, (), kwargs)
    except TypeError as e:
        raise ConfigError(f"{source}: model {model!r}: {e}") from None
    for k in ("epochs", "batch_size", "image_size"):
        if flat[k] is None:
            flat[k] = dict(getattr(cls, "train_defaults", {})).get(k)
    cfg: dict[str, Any] = {"model": model, "model_kwargs": full}
    for k, path in FLAG_PATHS.items():
        if len(path) == 2:
            cfg.setdefault(path[0], {})[path[1]] = flat[k]
    cfg["out"] = flat["out"]
    if cfg["data"]["path"] is None:
        del cfg["data"]["path"]
    if cfg["out"] is None:
        del cfg["out"]
    _validate(_plain(cfg), model, source, complete=True)
    cfg["model_kwargs"] = _typed(model, full)
    return cfg


def train_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config as ``api.train`` keywords (method keywords last, in their hinted types)."""
    out: dict[str, Any] = {}
    for k, path in FLAG_PATHS.items():
        out[k] = cfg[path[0]] if len(path) == 1 else cfg[path[0]][path[1]]
    clash = set(out) & set(cfg["model_kwargs"])
    if clash:
        raise ConfigError(f"model {cfg['model']!r}: keyword(s) {', '.join(sorted(clash))} clash with train settings")
    return {**out, **cfg["model_kwargs"]}
