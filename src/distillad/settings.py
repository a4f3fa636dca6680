"""The run settings, defined once: the ``data``, ``train`` and ``calibration`` sections of a training run.

Each setting is a dataclass field: its type hint (bounds as in ``distillad.hints``, choices as
``Literal``), its default and its help. Everything else is generated from these three classes:
the ``train``/``tune`` flags and the ``test``/``calibrate`` threshold flags (``cli_flags``), the YAML
sections and their JSON Schema (``config``), the ``train``/``data`` fields of run.json (``run_schema``,
``run_record``), ``api.train``'s keywords (``api_parameters``) and every check (``check``). A method's
own keywords come from its constructor the same way (``params.model_params``).

Field metadata (``setting(...)``): ``help``; ``flag``: the flat name (``api.train`` keyword, ``--flag``)
when it is not the field's; ``run``: where run.json keeps the value (None: not kept, e.g. the device);
``required_in_run``: run.json from every version has it (the others got their default when absent);
``schema``/``parse``: JSON Schema and command-line parser where the hint cannot say it (epochs: N or auto);
``only``: ``"calibrate"`` for the threshold settings that ``test``/``calibrate`` take but a run does not keep.
"""

from __future__ import annotations

import inspect
import math
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

from annotated_types import Ge, Interval

from .data.resize import RESIZE_MODES
from .errors import ConfigError, DataError
from .hints import NonNegativeFloat, PositiveInt
from .params import Param, bounded, param_schema, param_spec
from .precision import check_precision
from .registry import hint_bounds
from .synthesis.foreground import FOREGROUND_METHODS
from .synthesis.presets import SYNTHESIS_PRESETS

__all__ = ["DataSettings", "TrainSettings", "CalibrationSettings", "Setting", "SECTIONS", "AUTO",
           "THRESHOLD_METHODS", "DEFAULT_TARGET_FPR", "TRAIN_PRECISIONS", "LOGGERS", "MIN_IMAGE_SIZE", "MAX_IMAGE_SIZE", "parse_epochs",
           "setting", "table", "defaults", "section_schema", "check", "split_kwargs", "sections", "api_parameters",
           "run_record", "added_train_defaults", "settings_of"]

AUTO = "auto"
THRESHOLD_METHODS = ("sigma", "quantile", "gamma", "synthetic", "fpr", "fixed")
TRAIN_PRECISIONS = ("fp32", "bf16")
LOGGERS = ("tensorboard", "mlflow")
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 4096
DEFAULT_TARGET_FPR = 0.05  # fpr's false-alarm rate when none is given

Fraction01 = Annotated[float, Interval(gt=0, lt=1)]
ImageSize = Annotated[int, Interval(ge=MIN_IMAGE_SIZE, le=MAX_IMAGE_SIZE)]


def parse_epochs(value: Any) -> int | str | None:
    """``epochs`` as given: None (the method's), a positive integer, or ``"auto"``; ConfigError otherwise."""
    if isinstance(value, str):
        value = value.strip().lower()
        if value.isdigit():
            value = int(value)
    if value is None or value == AUTO:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"epochs must be a positive integer or 'auto', got {value!r} (--epochs)")
    return value


def setting(default: Any, help: str, *, flag: str | None = None, run: str | None = None,  # noqa: A002
            required_in_run: bool = False, schema: dict[str, Any] | None = None,
            parse: Callable[[Any], Any] | None = None, only: str | None = None) -> Any:
    """A run setting's field (see the module docstring for the metadata)."""
    return field(default=default, metadata={"help": help, "flag": flag, "run": run, "required_in_run": required_in_run,
                                            "schema": schema, "parse": parse, "only": only})


@dataclass
class DataSettings:
    """Where the good images come from and how they become the model input."""

    path: str | None = setting(None, "dataset root or category folder", flag="data", run="data.path",
                               required_in_run=True)
    category: str | None = setting(None, "category inside the dataset root (MVTec AD, VisA, ...; a class of CIFAR-10)",
                                   run="data.category")
    layout: str | None = setting(None, "force the layout: mvtec, mpdd, mvtec3d, btad, visa, magnetic_tile, cifar10, "
                                 "folder", run="data.layout")
    val_fraction: Annotated[float, Interval(ge=0, lt=1)] = setting(
        0.1, "good training images held out for thresholds (default: 0.1)", run="data.val_fraction")
    split_seed: int = setting(0, "seed of the train/validation split (default: 0)", run="data.split_seed")
    textures: str | None = setting(None, "folder of texture images (e.g. DTD) for synthetic anomalies; default: none",
                                   run="data.textures")
    foreground: Literal[FOREGROUND_METHODS] | None = setting(  # type: ignore[valid-type]
        None, "foreground masks for synthetic anomalies; default: the method's paper preset", run="data.foreground")
    resize: Literal[RESIZE_MODES] = setting(  # type: ignore[valid-type]
        "squash", "how images become the model input: squash (stretch to a square, the papers'; default), pad (keep "
        "the aspect, pad to a square with black) or long-side (long side = --image-size, the short side from the "
        "images' median aspect, a multiple of 32)", run="data.resize")


@dataclass
class TrainSettings:
    """How the student trains; None: the method's paper setting (``model.train_defaults``)."""

    epochs: int | str | None = setting(
        None, "a number, or auto: up to the method's paper epochs, stopping when validation (held-out good images vs. "
        "synthetic defects made from them) stops improving, keeping the best epoch (default: the method's paper "
        "setting)", run="train.epochs", required_in_run=True, parse=parse_epochs,
        schema={"type": ["integer", "string", "null"], "minimum": 1, "pattern": "^auto$"})
    batch_size: PositiveInt | None = setting(
        None, "default: the method's paper setting; under torchrun the global batch, split over the ranks",
        run="train.batch_size", required_in_run=True)
    image_size: ImageSize | None = setting(None, "default: the method's paper setting", run="train.image_size",
                                           required_in_run=True)
    seed: int = setting(0, "default: 0", run="train.seed", required_in_run=True)
    device: str = setting("auto", "auto (default), cpu, cuda, cuda:1 ...")
    num_workers: Annotated[int, Ge(0)] = setting(0, "default: 0")
    precision: Literal[TRAIN_PRECISIONS] = setting(  # type: ignore[valid-type]
        "fp32", "training precision: bf16 autocast (weights and optimiser stay fp32) needs a GPU or a CPU with "
        "AVX512-BF16/AMX (fp16 is not offered: it would need loss scaling); bottle metrics fp32 vs bf16: benchmarks/results/train_speed.md (default: fp32)",
        run="train.precision")
    logger: Literal[LOGGERS] | None = setting(  # type: ignore[valid-type]
        None, "log losses and validation overlays into the run folder (default: off)")

    def resolved(self, model: Any) -> "TrainSettings":
        """epochs, batch_size and image_size filled in from the method's ``train_defaults``, then checked."""
        out = type(self)(**asdict(self))
        for k in ("epochs", "batch_size", "image_size"):
            if getattr(out, k) is None:
                setattr(out, k, dict(model.train_defaults)[k])
        check(asdict(out), "train")
        return out

    def check_precision(self, device: Any) -> None:
        """bf16 only where ``device`` runs it natively (fp16 would need loss scaling; bf16 does not)."""
        check({"precision": self.precision}, "train")
        check_precision(self.precision, device)


@dataclass(frozen=True)
class CalibrationSettings:
    """How the thresholds are fitted on the validation split (``distillad.calibration``); checked when made."""

    method: Literal[THRESHOLD_METHODS] = setting(  # type: ignore[valid-type]
        "sigma", "how the thresholds are fitted on the validation split after training (default: sigma; "
        "`distillad calibrate` re-fits them)", flag="threshold_method", run="train.threshold_method")
    k_sigma: NonNegativeFloat = setting(3.0, "sigma: threshold = mean + k·std of validation scores (default: 3.0)",
                                        run="train.k_sigma", required_in_run=True)
    quantile: Fraction01 = setting(0.995, "quantile: the Q-quantile of validation scores; gamma: the Q-quantile of a "
                                   "Gamma fitted to them (default: 0.995)", run="train.quantile")
    threshold: float | None = setting(None, "fixed: the image threshold (a score >= X is defective)",
                                      run="train.threshold")
    pixel_threshold: float | None = setting(None, "fixed: the pixel threshold of the defect masks (default: sigma's "
                                            "on validation pixels)", run="train.pixel_threshold")
    synthesis: Literal[tuple(SYNTHESIS_PRESETS)] = setting(  # type: ignore[valid-type]
        "draem", "synthetic: the validation defects (default: draem, as distillad tune)", only="calibrate")
    textures: str | None = setting(None, "synthetic: texture images of the defects, e.g. DTD (default: the run's "
                                   "--textures, else procedural noise)", only="calibrate")
    target_fpr: Fraction01 | None = setting(
        None, "fpr: the image threshold at which a fraction F of good images is expected to be called defective, "
        "from the validation scores (the ⌈(n+1)(1−F)⌉-th smallest; with fewer than 1/F − 1 images a normal "
        "extrapolation, with a warning); alone it chooses method fpr (default F: 0.05)", run="train.target_fpr")

    def __post_init__(self) -> None:
        check({s.key: getattr(self, s.key) for s in settings_of("calibration", run_only=False)}, "calibration")
        if self.method == "fixed" and self.threshold is None:
            raise ConfigError("threshold method fixed needs the image threshold: give --threshold X")
        if self.method != "fixed" and (self.threshold is not None or self.pixel_threshold is not None):
            flag = "--threshold" if self.threshold is not None else "--pixel-threshold"
            raise ConfigError(f"{flag} sets a fixed threshold: use it with --threshold-method fixed "
                              f"(the {self.method} method fits its own)")
        if self.target_fpr is not None and self.method != "fpr":
            raise ConfigError(f"--target-fpr sets the false-alarm rate of threshold method fpr, not of {self.method}")
        if self.textures is not None and self.method != "synthetic":
            raise ConfigError("--textures is for the synthetic defects of --threshold-method synthetic")
        if self.textures is not None and not Path(self.textures).is_dir():
            raise DataError(f"{self.textures}: texture folder not found (--textures)")

    @property
    def fpr(self) -> float:
        """fpr's false-alarm rate (``target_fpr``, else 0.05)."""
        return DEFAULT_TARGET_FPR if self.target_fpr is None else self.target_fpr


SECTIONS: dict[str, type] = {"data": DataSettings, "train": TrainSettings, "calibration": CalibrationSettings}


# ----------------------------------------------------------------------------- the table, read from the classes
@dataclass(frozen=True)
class Setting:
    """One run setting: flat ``name`` (api keyword, ``--flag``), its place ``section``.``key`` in a config file."""

    name: str
    section: str
    key: str
    param: Param
    schema: dict[str, Any]
    help: str
    run: str | None
    required_in_run: bool
    parse: Callable[[Any], Any] | None
    only: str | None
    hint: Any = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def default(self) -> Any:
        return self.param.default


def _read(section: str, cls: type) -> list[Setting]:
    hints = typing.get_type_hints(cls)
    bounds = hint_bounds(typing.get_type_hints(cls, include_extras=True))
    out = []
    for f in fields(cls):
        md = f.metadata
        p = param_spec(md["flag"] or f.name, hints[f.name], None if f.default is MISSING else f.default)
        schema = md["schema"] or bounded(param_schema(p), bounds.get(f.name, []))
        out.append(Setting(p.name, section, f.name, p, schema, md["help"], md["run"], md["required_in_run"],
                           md["parse"], md["only"], hints[f.name]))
    return out


_TABLE: dict[tuple[type, ...], tuple[Setting, ...]] = {}


def table() -> tuple[Setting, ...]:
    """Every setting of the ``SECTIONS`` classes, in section order (the order of flags, YAML keys and
    api.train keywords); read from the classes when they change (a test may add a setting)."""
    key = tuple(SECTIONS.values())
    if key not in _TABLE:
        _TABLE[key] = tuple(s for sec, cls in SECTIONS.items() for s in _read(sec, cls))
    return _TABLE[key]


def settings_of(section: str | None = None, run_only: bool = True) -> list[Setting]:
    """The settings of ``section`` (all: None); ``run_only``: without the test/calibrate-only ones."""
    return [s for s in table() if (section is None or s.section == section) and not (run_only and s.only)]


def _by_name(name: str) -> Setting | None:
    """A run setting by its flat name (``textures`` is data.textures; calibrate's own is not a run's)."""
    return next((s for s in settings_of() if s.name == name), None)


def defaults() -> dict[str, Any]:
    """{flat name: default} of the settings a run takes."""
    return {s.name: s.default for s in settings_of()}


def section_schema(section: str) -> dict[str, dict[str, Any]]:
    """{key: JSON Schema} of a config file's section."""
    return {s.key: s.schema for s in settings_of(section)}


_BOUND_WORDS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}


_TYPE_WORDS = {"integer": "an integer", "number": "a number", "string": "a string"}


def _message(s: Setting, value: Any, err: Any) -> str:
    """A schema error as "<name> must be ..., got X (--flag)"."""
    if err.validator == "enum":
        must = "one of " + ", ".join(repr(c) for c in err.validator_value if c is not None) + \
               (" or None" if None in err.validator_value else "")
    elif err.validator in _BOUND_WORDS:
        must = f"{_BOUND_WORDS[err.validator]} {err.validator_value}"
    elif err.validator == "type":
        kinds = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        must = _TYPE_WORDS.get(kinds[0], "of type " + " or ".join(kinds))
    else:
        return f"{s.name} ({s.flag}): {err.message}"
    return f"{s.name} must be {must}, got {value!r} ({s.flag})"


def check(values: dict[str, Any], section: str | None = None) -> None:
    """Every given setting (flat name → value; ``section`` alone: its keys) against its schema: one
    ``ConfigError`` naming the keyword, its flag and the value. Floats must be finite."""
    import jsonschema
    for name, v in values.items():
        s = _by_name(name) if section is None else next((x for x in settings_of(section, run_only=False)
                                                          if x.key == name), None)
        if s is None:
            continue
        if s.parse is not None:
            v = s.parse(v)
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{s.name} must be a finite number, got {v!r} ({s.flag})")
        err = next(iter(jsonschema.Draft202012Validator(s.schema).iter_errors(
            str(v) if isinstance(v, Path) else v)), None)
        if err is not None:
            raise ConfigError(_message(s, v, err))


def split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``api.train``'s keywords → (every run setting, defaults filled in and checked; the method's keywords)."""
    own = {k: v for k, v in kwargs.items() if _by_name(k) is not None}
    check(own)
    return {**defaults(), **own}, {k: v for k, v in kwargs.items() if k not in own}


def sections(flat: dict[str, Any]) -> tuple[DataSettings, TrainSettings, CalibrationSettings]:
    """Flat settings (``split_kwargs``) → the three section objects (the calibration one checks its rules)."""
    by = {sec: {s.key: flat[s.name] for s in settings_of(sec)} for sec in SECTIONS}
    by["train"]["epochs"] = parse_epochs(by["train"]["epochs"])
    return SECTIONS["data"](**by["data"]), SECTIONS["train"](**by["train"]), SECTIONS["calibration"](**by["calibration"])


def api_parameters() -> list[inspect.Parameter]:
    """The run settings as keyword-only parameters with their defaults (``api.train``'s signature)."""
    return [inspect.Parameter(s.name, inspect.Parameter.KEYWORD_ONLY, default=s.default, annotation=s.hint)
            for s in settings_of() if s.name != "data"]


def run_record(data: DataSettings, train: TrainSettings, calibration: CalibrationSettings) -> dict[str, dict[str, Any]]:
    """The ``data`` and ``train`` fields of run.json: every setting with a ``run`` place (paths resolved;
    ``train`` as resolved for the method)."""
    objs = {"data": data, "train": train, "calibration": calibration}
    out: dict[str, dict[str, Any]] = {"data": {}, "train": {}}
    for s in settings_of():
        if s.run is None:
            continue
        v = getattr(objs[s.section], s.key)
        if s.section == "data" and s.key in ("path", "textures") and v is not None:
            v = str(Path(v).resolve())
        where, key = s.run.split(".")
        out[where][key] = v
    return out


def added_train_defaults() -> dict[str, Any]:
    """run.json ``train`` fields added after format 1, with the value a run.json without them was made with."""
    return {s.run.split(".")[1]: s.default for s in settings_of()
            if s.run and s.run.startswith("train.") and not s.required_in_run}
