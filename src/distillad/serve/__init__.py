"""``distillad serve``: a trained run behind an HTTP API and a web page (FastAPI + uvicorn, the
``serve`` extra: ``pip install 'distillad[serve]'``).

Routes: ``POST /v1/predict`` (one image: multipart or raw body), ``POST /v1/predict/batch``,
``GET /v1/model``, ``/healthz``, ``/readyz``, the page at ``/`` and the OpenAPI docs at ``/docs``.
Concurrent requests are micro-batched (``batching``); the torch backend runs the run's model,
the onnx one the file ``distillad export`` wrote (``backends``); ``app`` holds the routes.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DistilladError

__all__ = ["ServeConfig", "create_app", "read_token", "serve"]


@dataclass
class ServeConfig:
    """Settings of one service (the ``distillad serve`` flags)."""

    run: str | Path
    backend: str = "torch"
    onnx: str | Path | None = None
    device: str = "auto"
    precision: str = "fp32"  # torch backend: fp32 | bf16 | fp16 (distillad.precision)
    max_batch: int = 16
    max_wait_ms: float = 5.0
    max_queue: int = 64
    timeout_s: float = 30.0
    max_upload_mb: float = 20.0
    max_files: int = 16
    max_pixels: int | None = None  # None: Pillow's Image.MAX_IMAGE_PIXELS
    token: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    threads: int | None = None  # torch intra-op threads; None: torch's default
    decode_workers: int = max(1, min(4, os.cpu_count() or 1))

    def check(self) -> None:
        """Refuse impossible limits, naming the flag."""
        for flag, v in (("--timeout-s", self.timeout_s), ("--max-upload-mb", self.max_upload_mb)):
            if not v > 0:
                raise ConfigError(f"{flag} must be > 0, got {v!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads!r}")
        if self.max_files < 1:
            raise ConfigError(f"--max-files must be >= 1, got {self.max_files!r}")
        if self.token is not None and not self.token:
            raise ConfigError("the bearer token is empty")


def __getattr__(name: str) -> object:  # the web stack (fastapi) is imported only when used
    if name == "create_app":
        from .app import create_app
        return create_app
    raise AttributeError(name)


def read_token(path: str | Path) -> str:
    """The bearer token in ``path`` (surrounding white space stripped); refuses a missing or empty file."""
    p = Path(path)
    try:
        token = p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--token-file {p}: cannot read it ({e.__class__.__name__}: {e})") from None
    if not token:
        raise ConfigError(f"--token-file {p}: the file is empty")
    return token


def serve(cfg: ServeConfig, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Serve until interrupted; raises ``DistilladError`` (one line for the CLI) when the model fails to load."""
    try:
        import uvicorn

        from .app import create_app
    except ImportError as e:
        raise ConfigError(f"distillad serve needs the serve extra ({e.name} is missing): "
                          "pip install 'distillad[serve]'") from None
    from .backends import check_backend
    check_backend(cfg.backend, cfg.run, cfg.onnx)
    failed: list[str] = []
    server: uvicorn.Server | None = None

    def stop(message: str) -> None:
        failed.append(message)
        if server is not None:
            server.should_exit = True

    app = create_app(cfg, on_load_error=stop)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                                           server_header=False, timeout_keep_alive=5, timeout_graceful_shutdown=5))
    shown = "[" + host + "]" if ":" in host else host
    print(f"distillad serve: {Path(cfg.run)} ({cfg.backend}) on http://{shown}:{port}/ (API docs: /docs); "
          "ready when /readyz says so", file=sys.stderr, flush=True)
    server.run()
    if failed:
        raise DistilladError(f"the model failed to load: {failed[0]}")
