"""``distillad serve``: each route, each refused request, micro-batched answers equal to ``api.predict``
and ``model.predict``, limits, token auth. A tiny RD run (random teacher, 64 px) is served in-process
through FastAPI's TestClient; the streaming-limit and concurrency tests use a real uvicorn on loopback."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'distillad[serve]')")
from fastapi.testclient import TestClient  # noqa: E402

from distillad import api  # noqa: E402
from distillad.checkpoint import load_run, read_run_spec  # noqa: E402
from distillad.data import load_image  # noqa: E402
from distillad.errors import CheckpointError  # noqa: E402
from distillad.serve import ServeConfig, create_app  # noqa: E402
from distillad.serve.backends import TorchBackend  # noqa: E402


def _wait_ready(client: TestClient, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() - t0 < timeout, client.get("/readyz").json()
        time.sleep(0.05)


@pytest.fixture(scope="module")
def test_images(serve_run: Path) -> list[Path]:
    return sorted(Path(read_run_spec(serve_run)["data"]["path"]).glob("test/*/*.png"))


@pytest.fixture(scope="module")
def client(serve_run, one_thread):
    with TestClient(create_app(ServeConfig(serve_run, max_wait_ms=1))) as c:
        _wait_ready(c)
        yield c


def _png(arr: np.ndarray) -> bytes:
    """PNG bytes: Pillow for 8-bit and 16-bit grey, OpenCV for 16-bit colour (Pillow cannot write it)."""
    if arr.dtype == np.uint16 and arr.ndim == 3:
        import cv2
        return cv2.imencode(".png", arr[..., ::-1])[1].tobytes()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose header claims width×height pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


# ------------------------------------------------------------------------------ routes

def test_health_ready_model_page_and_docs(client, serve_run):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    info = client.get("/v1/model").json()
    spec = read_run_spec(serve_run)
    assert info["method"] == "rd" and info["image_size"] == [64, 64]
    assert info["teacher"]["weights_sha256"] == spec["teacher"]["weights_sha256"]
    assert info["thresholds"]["image"] == spec["calibration"]["image_threshold"]
    assert info["run_id"] == spec["weights"]["sha256"][:16]
    assert info["versions"]["serving"]["distillad"] and info["serving"]["backend"] == "torch"
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html") and 'id="drop"' in page.text
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static-offline-docs/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text
    js = client.get("/static-offline-docs/swagger-ui-bundle.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"] and len(js.content) > 100_000
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/predict", "/v1/predict/batch", "/v1/model", "/healthz", "/readyz"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/predict"]["post"]["requestBody"]["content"]


def test_predict_matches_api_predict_raw_and_multipart(client, serve_run, test_images, tmp_path):
    """Sequential requests (batches of one) give exactly the scores, overlays and decisions of ``api.predict``."""
    out = tmp_path / "pred"
    rows = api.predict(serve_run, test_images, out, device="cpu", batch_size=1, progress=False)
    thr = read_run_spec(serve_run)["calibration"]["image_threshold"]
    for f, row in zip(test_images, rows):
        raw = client.post("/v1/predict", content=f.read_bytes(), headers={"content-type": "image/png"}).json()
        form = client.post("/v1/predict", files={"file": (f.name, f.read_bytes(), "image/png")}).json()
        assert raw["score"] == form["score"] == row["score"]
        assert raw["is_anomalous"] == (row["decision"] == "defective") == (row["score"] >= thr)
        assert form["filename"] == f.name and (raw["width"], raw["height"]) == (64, 64)
        assert raw["threshold"] == thr and raw["model"] == "rd"
        heat = client.post("/v1/predict?heatmap=png", content=f.read_bytes())
        assert heat.headers["content-type"] == "image/png" and float(heat.headers["x-anomaly-score"]) == pytest.approx(row["score"])
        ours = np.array(Image.open(io.BytesIO(heat.content)).convert("RGB"))
        np.testing.assert_array_equal(ours, load_image(out / row["overlay"]))


def test_mask_png_and_base64(client, serve_run, test_images):
    f = test_images[-1]
    spec = read_run_spec(serve_run)
    model, _ = load_run(serve_run, "cpu")
    from distillad.data import image_to_tensor
    amap = model.predict(image_to_tensor(load_image(f))[None])[0][0, 0].numpy()
    mask = client.post("/v1/predict?mask=png", content=f.read_bytes())
    got = np.array(Image.open(io.BytesIO(mask.content)))
    np.testing.assert_array_equal(got, np.where(amap >= spec["calibration"]["pixel_threshold"], 255, 0))
    j = client.post("/v1/predict?mask=base64&heatmap=base64", content=f.read_bytes()).json()
    assert base64.b64decode(j["mask_png_base64"]) == mask.content
    assert Image.open(io.BytesIO(base64.b64decode(j["heatmap_png_base64"]))).size == (64, 64)


def test_batch_route(client, test_images):
    parts = [("files", (f.name, f.read_bytes(), "image/png")) for f in test_images[:3]]
    res = client.post("/v1/predict/batch?heatmap=base64", files=parts).json()["results"]
    single = [client.post("/v1/predict", content=f.read_bytes()).json()["score"] for f in test_images[:3]]
    assert [r["filename"] for r in res] == [f.name for f in test_images[:3]]
    np.testing.assert_allclose([r["score"] for r in res], single, rtol=1e-5)
    assert all("heatmap_png_base64" in r for r in res)


def test_16bit_rgba_grey_are_converted_as_predict_does(client, serve_run, test_images, tmp_path):
    rgb = load_image(test_images[-1])
    files = {"grey.png": _png(rgb[..., 1]), "rgba.png": _png(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])),
             "grey16.png": _png(rgb[..., 0].astype(np.uint16) * 257), "rgb16.png": _png(rgb.astype(np.uint16) * 257)}
    (tmp_path / "in").mkdir()
    for name, data in files.items():
        (tmp_path / "in" / name).write_bytes(data)
    rows = api.predict(serve_run, [tmp_path / "in" / n for n in files], tmp_path / "out", device="cpu", batch_size=1,
                       overlays=False, progress=False)
    for (name, data), row in zip(files.items(), rows):
        assert client.post("/v1/predict", content=data).json()["score"] == row["score"], name


# ------------------------------------------------------------------------------ refused requests

@pytest.mark.parametrize("body,ctype,status,code,words", [
    (b"", "image/png", 400, "empty_body", "empty"),
    (b"this is not an image", "image/png", 400, "bad_image", "not a readable image"),
    (None, "image/png", 400, "bad_image", "truncated"),  # the first 200 bytes of a PNG
    (_bomb_png(30_000, 30_000), "image/png", 400, "bad_image", "limit"),
    (b"{}", "application/json", 415, "unsupported_media_type", "application/json"),
    (b"--b\r\nnonsense", "multipart/form-data", 400, "malformed_multipart", "boundary"),
    (b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--b--\r\n", "multipart/form-data; boundary=b",
     400, "no_file", "no file part"),
])
def test_bad_requests_get_a_4xx_naming_the_problem(client, test_images, body, ctype, status, code, words):
    if body is None:
        body = test_images[0].read_bytes()[:200]
    r = client.post("/v1/predict", content=body, headers={"content-type": ctype})
    assert r.status_code == status and r.json()["error"] == code, r.json()
    assert words in r.json()["detail"]
    ok = client.post("/v1/predict", content=test_images[0].read_bytes())  # the service goes on
    assert ok.status_code == 200


def test_unknown_route_method_query_and_png_combination(client, test_images):
    assert client.get("/v2/nothing").json() == {"error": "not_found", "detail": "no route GET /v2/nothing"}
    assert client.get("/v1/predict").status_code == 405
    r = client.post("/v1/predict?mask=jpeg", content=test_images[0].read_bytes())
    assert r.status_code == 422 and "mask" in r.json()["detail"]
    r = client.post("/v1/predict?mask=png&heatmap=png", content=test_images[0].read_bytes())
    assert r.status_code == 400 and "one picture" in r.json()["detail"]
    parts = [("file", (f.name, f.read_bytes(), "image/png")) for f in test_images[:2]]
    r = client.post("/v1/predict", files=parts)
    assert r.status_code == 400 and "Too many files" in r.json()["detail"]


def test_size_limits(serve_run, test_images, one_thread):
    data = test_images[0].read_bytes()
    with TestClient(create_app(ServeConfig(serve_run, max_upload_mb=len(data) / 2**20 / 2, max_pixels=1000,
                                           max_files=2))) as c:
        _wait_ready(c)
        r = c.post("/v1/predict", content=data)
        assert r.status_code == 413 and "max-upload-mb" in r.json()["detail"]
        r = c.post("/v1/predict", content=data[: len(data) // 3])
        assert r.status_code == 400  # under the size limit, so it was read: truncated
        small = _png(np.zeros((40, 40, 3), np.uint8))  # 1600 pixels > max_pixels 1000
        r = c.post("/v1/predict", content=small)
        assert r.status_code == 400 and "over the limit of 1000" in r.json()["detail"]
        tiny = _png(np.zeros((20, 20, 3), np.uint8))
        r = c.post("/v1/predict/batch", files=[("files", (f"{i}.png", tiny, "image/png")) for i in range(3)])
        assert r.status_code == 400 and "Too many files" in r.json()["detail"]


# ------------------------------------------------------------------------------ loading, queue, timeout

class _Gated:
    """The real torch backend, held in ``predict`` until ``gate`` is set."""

    def __init__(self, run: Path) -> None:
        self.inner = TorchBackend(run, "cpu")
        self.name, self.device = "torch", "cpu"
        self.gate = threading.Event()
        self.gate.set()

    def predict(self, images):
        assert self.gate.wait(30)
        return self.inner.predict(images)


def test_busy_queue_503_and_timeout_504(serve_run, test_images, one_thread):
    backend = _Gated(serve_run)
    data = test_images[0].read_bytes()
    app = create_app(ServeConfig(serve_run, max_queue=1, timeout_s=2.0), backend_factory=lambda: backend)
    with TestClient(app) as c, concurrent.futures.ThreadPoolExecutor(1) as pool:
        _wait_ready(c)
        backend.gate.clear()
        first = pool.submit(c.post, "/v1/predict", content=data)
        svc = app.state.service
        while svc.batcher.in_flight < 1:
            time.sleep(0.01)
        r = c.post("/v1/predict", content=data)
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and r.json()["error"] == "busy"
        r = first.result(30)
        assert r.status_code == 504 and r.json()["error"] == "timeout"
        backend.gate.set()
        assert c.post("/v1/predict", content=data).status_code == 200


def test_not_ready_while_loading_and_load_failure(serve_run, test_images):
    gate = threading.Event()

    def slow_factory():
        gate.wait(30)
        return TorchBackend(serve_run, "cpu")

    with TestClient(create_app(ServeConfig(serve_run), backend_factory=slow_factory)) as c:
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 503
        r = c.post("/v1/predict", content=test_images[0].read_bytes())
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert c.get("/v1/model").json()["ready"] is False
        gate.set()
        _wait_ready(c)
    failures: list[str] = []

    def broken():
        raise CheckpointError("weights do not match")
    with TestClient(create_app(ServeConfig(serve_run), backend_factory=broken, on_load_error=failures.append)) as c:
        while not failures:
            time.sleep(0.01)
        assert "weights do not match" in c.get("/readyz").json()["detail"]
        assert c.post("/v1/predict", content=b"x").status_code == 503
    assert failures == ["weights do not match"]


# ------------------------------------------------------------------------------ security

def test_bearer_token_and_cors(serve_run, test_images, one_thread):
    data = test_images[0].read_bytes()
    with TestClient(create_app(ServeConfig(serve_run, token="s3cret-token"))) as c:
        _wait_ready(c)
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Basic s3cret-token"}):
            r = c.post("/v1/predict", content=data, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", headers
            assert c.get("/v1/model", headers=headers).status_code == 401
        ok = {"authorization": "Bearer s3cret-token"}
        assert c.post("/v1/predict", content=data, headers=ok).status_code == 200
        assert c.get("/v1/model", headers=ok).status_code == 200
        assert c.get("/healthz").status_code == 200  # probes need no token
        r = c.get("/healthz", headers={"origin": "http://elsewhere.example"})
        assert "access-control-allow-origin" not in r.headers  # CORS off by default
    with TestClient(create_app(ServeConfig(serve_run, cors_origins=["http://line.example"]))) as c:
        r = c.get("/healthz", headers={"origin": "http://line.example"})
        assert r.headers["access-control-allow-origin"] == "http://line.example"


def test_cli_refuses_bad_runs_and_token_files(tmp_path, capsys, serve_run):
    from distillad.cli import main
    assert main(["serve", "--run", str(tmp_path / "missing")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    (tmp_path / "token").write_text("  \n")
    assert main(["serve", "--run", str(serve_run), "--token-file", str(tmp_path / "token")]) == 2
    assert "is empty" in capsys.readouterr().err
    assert main(["serve", "--run", str(serve_run), "--backend", "onnx", "--onnx", str(tmp_path / "no.onnx"),
                 "--port", "1"]) == 2
    assert "onnx model file not found" in capsys.readouterr().err


# ------------------------------------------------------------------------------ a real server

@pytest.fixture(scope="module")
def live(serve_run, one_thread):
    """uvicorn on a free loopback port in a thread: (base URL, app)."""
    import uvicorn
    app = create_app(ServeConfig(serve_run, max_batch=8, max_wait_ms=300, max_upload_mb=1))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    import urllib.request
    t0 = time.monotonic()
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200:
                break
        except OSError:
            assert time.monotonic() - t0 < 60
            time.sleep(0.1)
    yield port, app
    server.should_exit = True
    thread.join(10)


def _post(port: int, data: bytes) -> dict:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/v1/predict", body=data, headers={"Content-Type": "image/png"})
    r = conn.getresponse()
    out = json.loads(r.read())
    conn.close()
    return out


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(live, serve_run, test_images):
    port, app = live
    model, _ = load_run(serve_run, "cpu")
    from distillad.data import image_to_tensor
    ref = [float(model.predict(image_to_tensor(load_image(f))[None])[1][0]) for f in test_images]
    assert min(np.diff(sorted(ref))) > 1e-4  # distinct answers, so a mix-up would show
    stats = app.state.service.batcher.stats
    before = dict(stats)
    order = test_images[::-1] + test_images  # 16 requests, each image twice
    with concurrent.futures.ThreadPoolExecutor(len(order)) as pool:
        got = list(pool.map(lambda f: _post(port, f.read_bytes()), order))
    for f, g in zip(order, got):
        assert g["score"] == pytest.approx(ref[test_images.index(f)], rel=1e-5, abs=1e-6), f.name
    n_batches = stats["batches"] - before["batches"]
    assert stats["items"] - before["items"] == len(order) and n_batches < len(order) / 2  # really batched


def test_oversize_body_refused_before_it_is_read(live):
    port, _ = live
    for chunked in (False, True):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        head = "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {100 * 2**20}\r\n\r\n"
        s.sendall(head.encode())
        if chunked:  # 2 MB of a body announced as endless: the answer comes while the client is still sending
            try:
                for _ in range(32):
                    s.sendall(b"10000\r\n" + b"\0" * 0x10000 + b"\r\n")
            except OSError:  # the server answered and closed: fine
                pass
        reply = b""
        while b"max-upload-mb" not in reply:  # headers and body may come in separate segments
            part = s.recv(65536)
            if not part:
                break
            reply += part
        s.close()
        reply = reply.decode(errors="replace")
        assert reply.startswith("HTTP/1.1 413") and "max-upload-mb" in reply, (chunked, reply[:200])


@pytest.mark.parametrize("backend,module,extra,file", [("onnx", "onnxruntime", "export", "model.onnx"),
                                                       ("openvino", "openvino", "openvino", "model.xml")])
def test_exported_backends_answer_like_torch(backend, module, extra, file, serve_run, test_images, tmp_path, client,
                                             one_thread):
    pytest.importorskip(module, reason=f"{module} is not installed (pip install 'distillad[{extra}]')")
    from distillad.export import export
    path = tmp_path / file
    export(serve_run, path, fmt=backend)
    parts = [("files", (f.name, f.read_bytes(), "image/png")) for f in test_images[:4]]
    with TestClient(create_app(ServeConfig(serve_run, backend=backend, onnx=path, max_batch=4))) as c:
        _wait_ready(c)
        assert c.get("/v1/model").json()["serving"]["backend"] == backend
        got = [r["score"] for r in c.post("/v1/predict/batch", files=parts).json()["results"]]
    ref = [r["score"] for r in client.post("/v1/predict/batch", files=parts).json()["results"]]
    np.testing.assert_allclose(got, ref, rtol=1e-4)
