"""The FastAPI application of ``distillad serve``: routes, error answers, limits and the token check.

Every bad request is answered with a JSON ``{"error": code, "detail": message}`` and a 4xx status;
the service goes on. The model loads (and is warmed up) in the background: ``/healthz`` answers at
once, ``/readyz`` and ``/v1/predict`` once it is ready. No route takes a path from the client: an
image arrives as bytes only. CORS is off unless origins are given.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hmac
import logging
from importlib import resources
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Literal

import cv2
import numpy as np
import torch
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..calibration import normalize_scores
from ..checkpoint import versions
from ..data import decode_image, image_to_tensor
from ..data.resize import content_size, crop_map, fit_image, run_geometry
from ..errors import DataError
from ..visualize import calibrated_colour_scale, overlay, png_bytes
from . import ServeConfig
from .backends import Backend, finished_spec, load_backend
from .batching import MicroBatcher, QueueFull, Ticket

__all__ = ["create_app", "ApiError"]

log = logging.getLogger("distillad.serve")
Picture = Literal["none", "png", "base64"]


class ApiError(Exception):
    """A request the service refuses: HTTP ``status``, a short ``code`` and a message naming the problem."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


class _BodyLimit:
    """ASGI middleware refusing a body over ``max_bytes``: from its Content-Length before reading it, or
    while it streams in (chunked), so an over-size upload is never read whole."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_bytes
        too_big = f"request body over the limit of {limit / 2**20:g} MB (--max-upload-mb)"
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await _error(400, "bad_request", "Content-Length is not a number")(scope, receive, send)
            if int(length) > limit:
                return await _error(413, "payload_too_large", too_big)(scope, receive, send)
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise ApiError(413, "payload_too_large", too_big)
            return message
        await self.app(scope, limited, send)


class _Service:
    """The state behind the routes: the run, the backend once loaded, the batcher."""

    def __init__(self, cfg: ServeConfig, factory: Callable[[], Backend],
                 on_load_error: Callable[[str], None] | None) -> None:
        self.cfg, self.factory, self.on_load_error = cfg, factory, on_load_error
        self.spec = finished_spec(cfg.run)
        self.size, self.resize = run_geometry(self.spec)  # (H, W) and the run's resize mode
        self.calib: dict[str, Any] = self.spec.get("calibration") or {}
        self.run_id = ((self.spec.get("weights") or {}).get("sha256") or "")[:16]
        self.backend: Backend | None = None
        self.batcher = MicroBatcher(self._run_batch, cfg.max_batch, cfg.max_wait_ms, cfg.max_queue)
        self.pool = concurrent.futures.ThreadPoolExecutor(cfg.decode_workers, thread_name_prefix="distillad-decode")
        self.ready = False
        self.load_error: str | None = None

    def _run_batch(self, items: list[torch.Tensor]) -> list[tuple[np.ndarray, float]]:
        assert self.backend is not None
        maps, scores = self.backend.predict(items)
        return [(maps[i, 0], float(scores[i])) for i in range(len(items))]

    def _warm_up(self, backend: Backend) -> None:
        """On the batch thread: its torch threads, then one forward at each batch size that will be common."""
        if self.cfg.threads is not None:
            torch.set_num_threads(self.cfg.threads)  # OpenMP's setting belongs to the calling thread
        x = torch.zeros(3, *self.size)
        for n in sorted({1, self.cfg.max_batch}):
            backend.predict([x] * n)

    async def start(self) -> None:
        self.batcher.start()
        try:
            backend = await asyncio.to_thread(self.factory)
            await self.batcher.call(self._warm_up, backend)
        except Exception as e:  # noqa: BLE001 - reported on /readyz and to the CLI
            self.load_error = str(e) or type(e).__name__
            log.error("distillad serve: the model failed to load: %s", self.load_error)
            if self.on_load_error is not None:
                self.on_load_error(self.load_error)
            return
        self.backend = backend
        self.ready = True
        log.info("distillad serve: model loaded and warmed up (%s on %s)", backend.name, backend.device)

    async def close(self) -> None:
        await self.batcher.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- one image ------------------------------------------------------------------
    def prepare(self, data: bytes, name: str) -> tuple[np.ndarray, torch.Tensor]:
        """Bytes → (uint8 RGB as decoded, model input): ``data.decode_image`` + the dataset's resize."""
        image = decode_image(data, name, self.cfg.max_pixels)
        return image, image_to_tensor(fit_image(image, self.size, self.resize)[0])

    def answer(self, name: str, image: np.ndarray, amap: np.ndarray, score: float, mask: Picture,
               heatmap: Picture) -> tuple[dict[str, Any], dict[str, bytes]]:
        """JSON fields of one prediction, and the PNGs asked for (mask, heatmap)."""
        amap = crop_map(amap, content_size(image.shape[:2], self.size, self.resize))  # the image's region (pad)
        thr = self.calib.get("image_threshold")
        norm = None if thr is None else float(normalize_scores(torch.tensor([score], dtype=torch.float64), self.calib)[0])
        out: dict[str, Any] = {
            "filename": name, "score": score, "normalized_score": norm, "threshold": thr,
            "is_anomalous": None if thr is None else bool(score >= thr),
            "width": int(image.shape[1]), "height": int(image.shape[0]), "model_image_size": list(self.size),
            "model": self.spec["method"], "run_id": self.run_id}
        pngs: dict[str, bytes] = {}
        if mask != "none":
            pthr = self.calib.get("pixel_threshold")
            full = cv2.resize(np.asarray(amap, np.float32), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
            pngs["mask"] = png_bytes(((full >= pthr) * 255).astype(np.uint8))  # type: ignore[operator]
        if heatmap != "none":  # as `distillad predict` draws it: the run's validation colour scale
            pngs["heatmap"] = png_bytes(overlay(image, amap, *calibrated_colour_scale(self.calib), threshold=None))
        for key, png in pngs.items():
            if (mask if key == "mask" else heatmap) == "base64":
                out[f"{key}_png_base64"] = base64.b64encode(png).decode()
        return out, pngs

    def info(self) -> dict[str, Any]:
        t = self.spec["teacher"]
        cfg = self.cfg
        return {"model": self.spec["method"], "run_id": self.run_id, "run_name": Path(cfg.run).resolve().name,
                "method": self.spec["method"], "model_kwargs": self.spec["model_kwargs"],
                "teacher": {"name": t.get("name"), "weights_sha256": t.get("weights_sha256")},
                "weights_sha256": (self.spec.get("weights") or {}).get("sha256"), "image_size": list(self.size),
                "thresholds": {"image": self.calib.get("image_threshold"), "pixel": self.calib.get("pixel_threshold")},
                "calibration": self.calib, "ready": self.ready,
                "versions": {"trained_with": self.spec.get("versions", {}), "serving": versions()},
                "serving": {"backend": cfg.backend, "device": None if self.backend is None else self.backend.device,
                            "max_batch": cfg.max_batch, "max_wait_ms": cfg.max_wait_ms, "max_queue": cfg.max_queue,
                            "timeout_s": cfg.timeout_s, "max_upload_mb": cfg.max_upload_mb, "max_files": cfg.max_files,
                            "in_flight": self.batcher.in_flight, **self.batcher.stats}}


_OCTET = {"schema": {"type": "string", "format": "binary"}}
_BODY = {"multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                            "properties": {"file": {"type": "string", "format": "binary"}}}},
         "image/png": _OCTET, "image/jpeg": _OCTET, "image/tiff": _OCTET, "application/octet-stream": _OCTET}
_BATCH_BODY = {"multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
    "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}
_PICTURE_HELP = "none, png (the answer is the PNG itself) or base64 (a field of the JSON)"


async def _uploads(request: Request, max_files: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image of the request: the file parts of a multipart body, or the raw body."""
    ctype = request.headers.get("content-type", "")
    kind = ctype.split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        try:
            form = await request.form(max_files=max_files, max_fields=max_files)
        except StarletteHTTPException as e:
            raise ApiError(400, "malformed_multipart", f"malformed multipart body: {e.detail}") from None
        except ValueError as e:  # python-multipart's own parse errors
            raise ApiError(400, "malformed_multipart", f"malformed multipart body: {e}") from None
        try:
            files = [(v.filename or k, await v.read()) for k, v in form.multi_items() if isinstance(v, UploadFile)]
        finally:
            await form.close()
        if not files:
            raise ApiError(400, "no_file", "the multipart body has no file part (send e.g. curl -F file=@image.png)")
        return files
    if kind.startswith("image/") or kind in ("application/octet-stream", ""):
        body = await request.body()
        if not body:
            raise ApiError(400, "empty_body", "the request body is empty; send an image")
        return [("request body", body)]
    raise ApiError(415, "unsupported_media_type",
                   f"Content-Type {ctype!r} is not accepted: send the image as the body (image/png, image/jpeg, ... "
                   "or application/octet-stream) or as multipart/form-data (curl: -H 'Content-Type: image/png' "
                   "--data-binary @FILE, or -F file=@FILE)")


def _app_class() -> Any:
    """``FastAPIOffline`` (package ``fastapi-offline``): FastAPI whose /docs and /redoc pages load Swagger UI
    and ReDoc from files this server serves, since a line machine is often offline; FastAPI's own pages,
    which load them from a CDN, without the package."""
    try:
        from fastapi_offline import FastAPIOffline
    except ImportError:
        return FastAPI
    return FastAPIOffline


def create_app(cfg: ServeConfig, backend_factory: Callable[[], Backend] | None = None,
               on_load_error: Callable[[str], None] | None = None) -> FastAPI:
    """The application over ``cfg.run``; ``backend_factory`` replaces ``load_backend`` (tests);
    ``on_load_error(message)`` is called when the model fails to load (the CLI stops then)."""
    cfg.check()
    factory = backend_factory or (lambda: load_backend(cfg.backend, cfg.run, cfg.device, cfg.onnx, cfg.precision))
    svc = _Service(cfg, factory, on_load_error)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = asyncio.get_running_loop().create_task(svc.start())
        yield
        loader.cancel()
        await svc.close()

    app = _app_class()(title="distillad serve", version=__version__, lifespan=lifespan,
                  description=f"Anomaly scores, decisions and defect maps of the run {Path(cfg.run).name} "
                              f"({svc.spec['method']}).")
    app.state.service = svc
    app.add_middleware(_BodyLimit, max_bytes=int(cfg.max_upload_mb * 2**20))
    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        return _error(e.status, e.code, e.detail, e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        detail = {404: f"no route {request.method} {request.url.path}",
                  405: f"{request.method} is not allowed on {request.url.path}"}.get(e.status_code, str(e.detail))
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return _error(e.status_code, code, detail, dict(e.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        msg = "; ".join(f"{'.'.join(map(str, err.get('loc', ())))}: {err.get('msg')}" for err in e.errors())
        return _error(422, "invalid_request", msg)

    def auth(request: Request) -> None:
        if cfg.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), cfg.token.encode()):
            raise ApiError(401, "unauthorized", "missing or wrong bearer token (Authorization: Bearer TOKEN)",
                           {"WWW-Authenticate": "Bearer"})

    async def run_predict(request: Request, mask: Picture, heatmap: Picture, batch: bool) -> Response:
        if svc.load_error is not None:
            raise ApiError(503, "not_ready", f"the model failed to load: {svc.load_error}")
        if not svc.ready:
            raise ApiError(503, "not_ready", "the model is still loading", {"Retry-After": "1"})
        if mask != "none" and svc.calib.get("pixel_threshold") is None:
            raise ApiError(400, "no_pixel_threshold", "this run has no pixel threshold (trained without "
                                                      "validation images), so no mask")
        if "png" in (mask, heatmap) and (batch or mask == heatmap):
            raise ApiError(400, "bad_request", "a PNG answer holds one picture of one image: ask for mask=png or "
                                               "heatmap=png on /v1/predict, or for base64")
        try:
            with svc.batcher.admit() as ticket:
                return await asyncio.wait_for(_predict(request, mask, heatmap, batch, ticket), cfg.timeout_s)
        except QueueFull as e:
            raise ApiError(503, "busy", f"the service is busy: {e}; retry shortly", {"Retry-After": "1"}) from None
        except asyncio.TimeoutError:
            raise ApiError(504, "timeout", f"no answer within {cfg.timeout_s:g} s (--timeout-s)") from None

    async def _predict(request: Request, mask: Picture, heatmap: Picture, batch: bool, ticket: Ticket) -> Response:
        files = await _uploads(request, cfg.max_files if batch else 1)
        if len(files) > 1 and not batch:
            raise ApiError(400, "bad_request", "several images: send them to /v1/predict/batch")
        names = [n for n, _ in files]
        loop = asyncio.get_running_loop()
        try:
            prepared = await asyncio.gather(*(loop.run_in_executor(svc.pool, svc.prepare, d, n) for n, d in files))
        except DataError as e:
            raise ApiError(400, "bad_image", str(e)) from None
        del files
        results = await asyncio.gather(*(svc.batcher.submit(x, ticket) for _, x in prepared))
        answers = await asyncio.gather(*(loop.run_in_executor(svc.pool, svc.answer, name, img, amap, score, mask, heatmap)
                                         for name, (img, _), (amap, score) in zip(names, prepared, results)))
        if batch:
            return JSONResponse({"results": [a for a, _ in answers], "model": svc.spec["method"], "run_id": svc.run_id})
        body, pngs = answers[0]
        for key, mode in (("mask", mask), ("heatmap", heatmap)):
            if mode == "png":
                return Response(pngs[key], media_type="image/png", headers={
                    "X-Anomaly-Score": f"{body['score']:.9g}", "X-Is-Anomalous": str(body["is_anomalous"]).lower()})
        return JSONResponse(body)

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        html = resources.files("distillad.serve").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                                       "style-src 'unsafe-inline'; script-src 'unsafe-inline'",
            "X-Content-Type-Options": "nosniff"})

    @app.get("/healthz", summary="the process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="the model is loaded and warmed up")
    async def readyz() -> JSONResponse:
        if svc.ready:
            return JSONResponse({"status": "ready"})
        detail = f"the model failed to load: {svc.load_error}" if svc.load_error else "the model is still loading"
        return _error(503, "not_ready", detail)

    @app.get("/v1/model", dependencies=[Depends(auth)], summary="the served run: method, teacher, thresholds")
    async def model_info() -> dict[str, Any]:
        return svc.info()

    @app.post("/v1/predict", dependencies=[Depends(auth)], openapi_extra={"requestBody": {"content": _BODY}},
              summary="score one image", responses={200: {"content": {"image/png": {}}}})
    async def predict(request: Request, mask: Picture = Query("none", description=_PICTURE_HELP),
                      heatmap: Picture = Query("none", description=_PICTURE_HELP)) -> Response:
        return await run_predict(request, mask, heatmap, batch=False)

    @app.post("/v1/predict/batch", dependencies=[Depends(auth)], summary="score several images (multipart)",
              openapi_extra={"requestBody": {"content": _BATCH_BODY}})
    async def predict_batch(request: Request, mask: Literal["none", "base64"] = Query("none"),
                            heatmap: Literal["none", "base64"] = Query("none")) -> Response:
        return await run_predict(request, mask, heatmap, batch=True)

    return app
