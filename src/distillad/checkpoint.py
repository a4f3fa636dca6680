"""Run folders: weights in safetensors, everything else in JSON, every file written atomically.

A run folder holds
- ``run.json``: format version, library and framework versions, method and its keywords,
  teacher name and weights SHA-256, image size, input normalisation, training settings, data,
  and after training the calibration (thresholds from validation good images) and the
  SHA-256 of ``model.safetensors``;
- ``model.safetensors``: the trained weights (all but the teacher, rebuilt from its verified file);
- ``last.safetensors``: the state after the last finished training step (one pass of one phase):
  weights and every phase's optimiser tensors, with the step, phase and optimiser settings as its
  metadata, one atomic file for resume; ``trainer_state.json`` is a readable copy of that metadata;
- ``train_log.jsonl``: one line per step (phase, epoch, losses, seconds).
``model_kwargs`` is the constructor's full keyword set with defaults applied, so a later change of
a default never silently rebuilds a different model; a keyword the current code does not accept
is refused, naming it. ``run.json`` is checked against a schema and sealed by an integrity hash
(``distillad.run_schema``); it names only files inside its own folder. Nothing in a run folder is
ever unpickled: loading = the method's class rebuilt from its stored keywords + safetensors tensors.

Files are written atomically (a temporary ``.NAME.XXXXXXXX.tmp`` in the same folder, fsync, rename)
with the mode the umask gives, so a kill or a full disk never leaves a half-written file in place;
an ``OSError`` while writing becomes an ``OutputError`` naming the file (disk full, read-only ...),
and ``remove_temporaries`` clears what a kill left behind. ``run_lock`` keeps two processes from
training into one folder (``filelock``: an OS lock, released when its process dies).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import __version__
from .errors import CheckpointError, ConfigError, OutputError
from .outputs import ensure_folder, write_failed
from .registry import rebuild_model
from .run_schema import seal, validate_run_spec

__all__ = [
    "FORMAT_VERSION", "atomic_write_bytes", "atomic_write_json", "read_json", "save_weights", "load_weights",
    "write_run_spec", "read_run_spec", "finish_run", "load_run", "save_training_state", "load_training_state",
    "versions", "append_jsonl", "model_from_spec", "storage_error", "remove_temporaries",
    "run_lock", "lock_is_held", "busy_error", "RUN_FILES", "TEST_OUTPUTS",
]

FORMAT_VERSION = 3  # 2: full model keywords, phase-aware trainer state; 3: schema, integrity hash, run id
RUN_FILE = "run.json"
WEIGHTS_FILE = "model.safetensors"
LOCK_FILE = ".distillad.lock"
#: what ``train`` writes into a run folder, and what ``test`` adds (``--overwrite`` removes exactly these)
RUN_FILES = (RUN_FILE, WEIGHTS_FILE, "last.safetensors", "trainer_state.json", "train_log.jsonl",
             "early_stop.json", "best.safetensors")  # the last two: --epochs auto (early_stopping)
TEST_OUTPUTS = ("metrics.json", "scores.csv", "scores.png", "overlays.png", "report.html")
_TMP = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}(\.tmp)?$")


def _umask() -> int:
    """The process's umask (it can only be read by setting it, so set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def storage_error(path: str | Path, e: OSError) -> OutputError:
    """An ``OSError`` met while writing one of the library's own files, as one line (``outputs.write_failed``)."""
    return write_failed(path, e, flag="")


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files an interrupted atomic write of one of ``folder``'s own files left."""
    gone = []
    for f in Path(folder).glob(".*"):
        m = _TMP.match(f.name)
        if m and f.is_file() and m.group("name") in RUN_FILES + TEST_OUTPUTS:
            f.unlink(missing_ok=True)
            gone.append(f)
    return gone


def lock_is_held(folder: str | Path) -> bool:
    """Whether another process trains into ``folder`` now (never creates the lock file)."""
    from filelock import FileLock, Timeout
    path = Path(folder) / LOCK_FILE
    if not path.exists():
        return False
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    lock.release()
    return False


def busy_error(folder: str | Path) -> CheckpointError:
    return CheckpointError(f"{folder}: another distillad process is training into this folder right now (it "
                           "holds its lock); wait for it to finish or choose another --out")


@contextlib.contextmanager
def run_lock(folder: str | Path) -> Iterator[None]:
    """Hold ``folder``'s lock for a training process; a second one is refused at once."""
    from filelock import FileLock, Timeout
    ensure_folder(folder)
    lock = FileLock(str(Path(folder) / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise busy_error(folder) from None
    try:
        yield
    finally:
        lock.release()


def versions() -> dict[str, str]:
    import timm

    return {"distillad": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "python": platform.python_version()}


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise storage_error(path, e) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a run folder is shared like any file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise storage_error(path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def append_jsonl(path: str | Path, row: dict[str, Any]) -> None:
    """Append one JSON line (a log; a torn last line is the only possible damage, and readers skip it)."""
    try:
        with open(path, "a") as f:
            f.write(json.dumps(row, default=_json_default) + "\n")
    except OSError as e:
        raise storage_error(path, e) from None


def _json_default(o: Any) -> Any:
    if isinstance(o, (Path,)):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    if torch.is_tensor(o):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: not found")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return obj


def save_weights(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """Atomically write tensors (and string ``metadata``) as safetensors; returns the file's SHA-256."""
    data = st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_weights(path: str | Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file, checking its SHA-256 when given (hash and parse the same bytes)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise CheckpointError(f"{path}: SHA-256 differs from the one recorded at training time; "
                              "the file was modified or corrupted")
    try:
        return st_load(data)
    except Exception as e:  # noqa: BLE001 - safetensors raises several types
        raise CheckpointError(f"{path}: not a valid safetensors file ({e})") from None


# ------------------------------------------------------------------------- run spec

def write_run_spec(run_dir: str | Path, model: torch.nn.Module, train: dict[str, Any],
                   data: dict[str, Any]) -> dict[str, Any]:
    """Record what is being trained, before training starts (so ``--resume`` can check it)."""
    teacher = model.teacher  # type: ignore[attr-defined]
    name, kwargs = getattr(model, "model_name", None), getattr(model, "model_kwargs", None)
    if name is None or kwargs is None:
        raise CheckpointError(f"{type(model).__name__}: not a registered method (no model_name/model_kwargs); "
                              "register its constructor with @register_model to checkpoint it")
    spec = {
        "format_version": FORMAT_VERSION, "versions": versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "method": name, "model_kwargs": json.loads(json.dumps(kwargs, default=_json_default)),
        "teacher": {"name": teacher.name, "weights_sha256": teacher.weights_sha256,
                    "out_indices": list(teacher.out_indices),
                    "mean": teacher.mean.flatten().tolist(), "std": teacher.std.flatten().tolist()},
        "image_size": train["image_size"], "train": train, "data": data, "finished": False,
        "run_id": uuid.uuid4().hex,
    }
    atomic_write_json(Path(run_dir) / RUN_FILE, seal(spec))
    return spec


def read_run_spec(run_dir: str | Path) -> dict[str, Any]:
    """``run.json`` of a run folder, checked for a format this version reads."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: run folder not found")
    spec = read_json(run_dir / RUN_FILE)
    fv = spec.get("format_version")
    if fv != FORMAT_VERSION or isinstance(fv, bool):
        made = spec.get("versions", {}).get("distillad", "unknown") if isinstance(spec.get("versions"), dict) \
            else "unknown"
        what = f"{fv!r} (a {type(fv).__name__}, not an integer)" if not isinstance(fv, int) or isinstance(fv, bool) \
            else str(fv)
        raise CheckpointError(f"{run_dir}: run format {what} (made by distillad {made}); this distillad "
                              f"reads format {FORMAT_VERSION}. Retrain, or use the distillad version that made it.")
    validate_run_spec(spec, run_dir / RUN_FILE)
    return spec


def finish_run(run_dir: str | Path, model: torch.nn.Module, calibration: dict[str, Any],
               history: list[dict[str, float]]) -> dict[str, Any]:
    """Save final weights and complete ``run.json`` with their hash and the calibration."""
    run_dir = Path(run_dir)
    spec = read_run_spec(run_dir)
    sha = save_weights(run_dir / WEIGHTS_FILE, model.student_state_dict())  # type: ignore[operator]
    spec.update(finished=True, weights={"file": WEIGHTS_FILE, "sha256": sha}, calibration=calibration,
                history=history, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    atomic_write_json(run_dir / RUN_FILE, seal(spec))
    return spec


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a trained model from its run folder: checks format, weights hash and teacher hash."""
    run_dir = Path(run_dir)
    spec = read_run_spec(run_dir)
    if not spec.get("finished"):
        raise CheckpointError(f"{run_dir}: training did not finish; continue it with "
                              f"`distillad train --resume --out {run_dir} ...`")
    model = model_from_spec(spec, run_dir)
    got = model.teacher.weights_sha256  # type: ignore[attr-defined]
    if got != spec["teacher"]["weights_sha256"]:
        raise CheckpointError(f"{run_dir}: the teacher weights found now (SHA-256 {got}) are not the ones "
                              f"the run was trained with ({spec['teacher']['weights_sha256']})")
    w = spec["weights"]
    path = run_dir / w["file"]  # the schema allows a plain file name only: never outside the folder
    state = load_weights(path, w["sha256"])
    bad = next((k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
    if bad is not None:
        raise CheckpointError(f"{path}: tensor {bad!r} holds NaN/inf values; this model cannot score images")
    _load_student(model, state, path)
    return model.to(device).eval(), spec


def model_from_spec(spec: dict[str, Any], run_dir: str | Path) -> torch.nn.Module:
    """Rebuild exactly the model a run recorded: its method's class with the stored full keywords."""
    try:
        return rebuild_model(spec["method"], dict(spec["model_kwargs"]))
    except ConfigError as e:
        raise CheckpointError(f"{Path(run_dir) / RUN_FILE}: cannot rebuild its model with this distillad: {e}") from None


def _load_student(model: torch.nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    resize = getattr(model, "resize_state", None)  # a fitted size (PatchCore's memory bank) follows the file
    if resize is not None:
        try:
            resize(state)
        except ConfigError as e:
            raise CheckpointError(f"{where}: {e}") from None
    own = model.student_state_dict()  # type: ignore[operator]
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise CheckpointError(f"{where}: does not fit the model (missing {missing[:3]}, unexpected {extra[:3]})")
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        raise CheckpointError(f"{where}: wrong shapes for {bad[:3]}")
    model.load_state_dict(state, strict=False)


# ------------------------------------------------------------------------- resume

def save_training_state(run_dir: str | Path, model: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer],
                        step: Any, history: list[dict[str, Any]], run_id: str | None = None) -> None:
    """Model and every phase's optimiser tensors, with the rest of the state as JSON metadata, in ONE atomically
    written ``last.safetensors`` (so a kill can never pair new weights with an old step); ``trainer_state.json``
    follows as a readable copy, with the weights' SHA-256.

    ``step``: the ``phases.Step`` just finished (its index, phase and epoch are recorded)."""
    run_dir = Path(run_dir)
    tensors = {f"model.{k}": v for k, v in model.student_state_dict().items()}  # type: ignore[operator]
    optim_json: dict[str, Any] = {}
    for phase, optimizer in optimizers.items():
        opt = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for idx, st in opt["state"].items():
            for k, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"optim.{phase}.{idx}.{k}"] = v
                else:
                    scalars.setdefault(str(idx), {})[k] = v
        optim_json[phase] = {"param_groups": opt["param_groups"], "scalars": scalars}
    state = {"format_version": FORMAT_VERSION, "run_id": run_id, "step": step.index + 1, "phase": step.phase.name,
             "phase_epoch": step.epoch + 1, "history": history, "optimizers": optim_json}
    meta = {_STATE_KEY: json.dumps(state, default=_json_default)}
    sha = save_weights(run_dir / "last.safetensors", tensors, meta)
    atomic_write_json(run_dir / "trainer_state.json", {**state, "sha256": sha})


_STATE_KEY = "distillad.trainer_state"


def _metadata(data: bytes, path: Path) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes (an 8-byte little-endian header length, then JSON)."""
    try:
        n = int.from_bytes(data[:8], "little")
        return dict(json.loads(data[8:8 + n]).get("__metadata__") or {})
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise CheckpointError(f"{path}: not a valid safetensors file (unreadable header)") from None


def load_training_state(run_dir: str | Path, model: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer],
                        run_id: str | None = None) -> dict[str, Any] | None:
    """Restore the last finished step's state into ``model`` and ``optimizers``; None if there is none.
    ``run_id``: the run.json's id; a state saved for another run is refused.

    Returns {"step": number of finished steps, "history": log rows}."""
    run_dir = Path(run_dir)
    path = run_dir / "last.safetensors"
    if not path.is_file():
        return None
    data = path.read_bytes()
    try:
        st = json.loads(_metadata(data, path)[_STATE_KEY])
    except (KeyError, ValueError):
        raise CheckpointError(f"{path}: holds no trainer state (not written by this distillad version); "
                              "start over with --overwrite") from None
    mirror = run_dir / "trainer_state.json"
    if mirror.is_file():  # the readable copy: same step → same weights; one step behind → killed in between
        m = read_json(mirror)
        if m.get("step") == st.get("step") and m.get("sha256") != hashlib.sha256(data).hexdigest():
            raise CheckpointError(f"{path}: SHA-256 differs from the one recorded at training time; "
                                  "the file was modified or corrupted")
    if st.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by an incompatible distillad version (trainer state format "
                              f"{st.get('format_version')}, this version reads {FORMAT_VERSION})")
    if st.get("run_id") != run_id:
        raise CheckpointError(f"{path}: saved by another run (run id {st.get('run_id')}, this folder's run.json "
                              f"has {run_id}); it cannot be resumed here: start over with --overwrite")
    saved = st.get("optimizers")
    if not isinstance(saved, dict) or set(saved) != set(optimizers):
        raise CheckpointError(f"{path}: saved for phases {sorted(saved or {})}, but the model declares "
                              f"{sorted(optimizers)}")
    try:
        tensors = st_load(data)
    except Exception as e:  # noqa: BLE001 - safetensors raises several types
        raise CheckpointError(f"{path}: not a valid safetensors file ({e})") from None
    _load_student(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    for phase, optimizer in optimizers.items():
        state: dict[int, dict[str, Any]] = {}
        prefix = f"optim.{phase}."
        for k, v in tensors.items():
            if k.startswith(prefix):
                idx, name = k[len(prefix):].split(".", 1)
                state.setdefault(int(idx), {})[name] = v
        for idx, sc in saved[phase].get("scalars", {}).items():
            state.setdefault(int(idx), {}).update(sc)
        try:
            optimizer.load_state_dict({"state": state, "param_groups": saved[phase]["param_groups"]})
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{path}: optimiser state of phase {phase!r} does not fit this model ({e})") from None
    return {"step": int(st["step"]), "history": list(st.get("history", []))}
