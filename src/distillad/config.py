"""A training run as one YAML file: ``distillad train --print-config`` writes it, ``--config`` runs it.

The file has fixed sections (``data``, ``train``, ``calibration``, ``out``), generated from the run
settings (``distillad.settings``), and ``model_kwargs``, whose keys and types come from the method's
constructor signature and type hints (``distillad.params``), so neither a new setting nor a new
method needs config code. Files are read with PyYAML and checked with a JSON Schema built
from those hints; every problem is a ``ConfigError`` naming the file and the key.
"""

from __future__ import annotations

import difflib
import pathlib
import re
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from .errors import ConfigError
from .params import Param, model_kwargs_schema, model_params, param_spec, typed_kwargs
from .registry import bind_model_kwargs, list_models, model_class
from .settings import LOGGERS, defaults, section_schema, settings_of

__all__ = ["Param", "param_spec", "model_params", "config_schema", "load_config", "peek_model",
           "config_from_args", "dump_config", "train_kwargs", "flag_paths", "flat_defaults", "LOGGERS"]


def flag_paths() -> dict[str, tuple[str, ...]]:
    """Flat ``api.train`` keyword (= CLI flag) → (section, key) in the file (``distillad.settings``)."""
    return {"model": ("model",), "out": ("out",), **{st.name: (st.section, st.key) for st in settings_of()}}


def flat_defaults() -> dict[str, Any]:
    """Flat keyword → default (model and out: none)."""
    return {"model": None, "out": None, **defaults()}

SECTIONS = ["model", "model_kwargs", "data", "train", "calibration", "out"]
#: keys a user fills in (``--print-config`` with only ``--model`` leaves them null)
REQUIRED = {"path": "--data", "model": "--model", "data": "--data", "out": "--out"}


def config_schema(model: str, complete: bool = False) -> dict[str, Any]:
    """JSON Schema of a config for ``model``; ``complete`` also requires model, data.path and out."""
    def section(props: dict[str, Any], required: list[str] = ()) -> dict[str, Any]:
        return {"type": "object", "properties": props, "additionalProperties": False,
                **({"required": list(required)} if complete and required else {})}

    props = {"model": {"enum": list_models()}, "model_kwargs": model_kwargs_schema(model),
             **{k: section(section_schema(k), ["path"] if k == "data" else []) for k in ("data", "train", "calibration")},
             "out": {"type": ["string", "null"]}}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            **section(props, ["model", "data", "out"] if complete else [])}


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
        flag = REQUIRED.get(missing, missing)
        where = f"{path}.{missing}" if path else missing
        return f"{source}: missing {where!r} (give {flag} or set it in the config file)"
    flat = next((k for k, v in flag_paths().items() if ".".join(v) == path), None)
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
    missing = [e for e in errors if e.validator == "required"]
    if len(missing) > 1:  # name every path a template leaves to fill in, not only the first
        where = [".".join([*map(str, e.absolute_path), e.message.split("'")[1]]) for e in missing]
        flags = [REQUIRED.get(w.split(".")[-1], w) for w in where]
        raise ConfigError(f"{source}: missing {', '.join(map(repr, where))} (give {', '.join(flags)} or set them "
                          "in the config file)")
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
    model = _read_yaml(path).get("model")
    if isinstance(model, str) and model not in list_models():
        raise ConfigError(f"{path}: model: unknown model {model!r}; available: {', '.join(list_models())}")
    return model if isinstance(model, str) else None


def load_config(path: str | Path, model: str | None = None) -> dict[str, Any]:
    """Read and check a (possibly partial) config file; ``model`` overrides the file's ``model:``.

    Returns the nested dict with values in their hinted types (tuples, floats).
    """
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
        raw["model_kwargs"] = typed_kwargs(model, raw["model_kwargs"])
    for st in settings_of():  # YAML's 1 is an int: a float setting gets a float
        if st.param.kind == "float" and (raw.get(st.section) or {}).get(st.key) is not None:
            raw[st.section][st.key] = float(raw[st.section][st.key])
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
    """The config as YAML (tuples as lists), in the file's section order. A template (``data.path`` or
    ``out`` not set) shows them as ``null`` with a comment saying what to fill in."""
    body = yaml.safe_dump({k: _plain(cfg[k]) for k in SECTIONS if k in cfg}, sort_keys=False, allow_unicode=True)
    todo = [f for f, line in (("data.path", "  path: null\n"), ("out", "out: null\n")) if line in body]
    body = body.replace("\n  path: null\n", "\n  path: null  # fill in: the dataset root or category folder (--data)\n")
    body = body.replace("\nout: null\n", "\nout: null  # fill in: the run folder to create (--out)\n")
    head = f"# distillad {__version__}; run with: distillad train --config THIS_FILE.yaml\n"
    if todo:
        head += f"# a template: fill in {' and '.join(todo)} first\n"
    return head + body


# ----------------------------------------------------------------------------- flags + file → config
def config_from_args(model: str, flags: dict[str, Any], model_kwargs: dict[str, Any] | None = None,
                     base: dict[str, Any] | None = None, source: str = "command line",
                     template: bool = False) -> dict[str, Any]:
    """The FULL config: api.train defaults ← ``base`` (a loaded file) ← ``flags`` given on the command line.

    ``flags`` are flat api.train keywords (``flag_paths``); ``model_kwargs`` the method keywords given as
    flags. Method keywords get their defaults applied, epochs/batch_size/image_size the method's
    ``train_defaults``; the result is checked against ``config_schema(model, complete=True)``.
    ``template``: data.path and out may be missing (``--print-config`` with only ``--model``): they stay null.
    """
    base = base or {}
    unknown = set(flags) - set(flag_paths())
    if unknown:
        raise ConfigError(f"{source}: not a train setting: {', '.join(sorted(unknown))}")
    flat = flat_defaults()
    for k, path in flag_paths().items():
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
    for k, path in flag_paths().items():
        if len(path) == 2:
            cfg.setdefault(path[0], {})[path[1]] = flat[k]
    cfg["out"] = flat["out"]
    if not template and cfg["data"]["path"] is None:
        del cfg["data"]["path"]
    if not template and cfg["out"] is None:
        del cfg["out"]
    _validate(_plain(cfg), model, source, complete=not template)
    cfg["model_kwargs"] = typed_kwargs(model, full)
    return cfg


def train_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config as ``api.train`` keywords (method keywords last, in their hinted types)."""
    out: dict[str, Any] = {}
    for k, path in flag_paths().items():
        out[k] = cfg[path[0]] if len(path) == 1 else cfg[path[0]][path[1]]
    clash = set(out) & set(cfg["model_kwargs"])
    if clash:
        raise ConfigError(f"model {cfg['model']!r}: keyword(s) {', '.join(sorted(clash))} clash with train settings")
    return {**out, **cfg["model_kwargs"]}
