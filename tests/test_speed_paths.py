"""The fast inference paths against their references: the fused map stage (maps.smooth_combined) vs
upsample → combine → blur, BatchNorm folding (layers.fold_batchnorm), and reduced precisions
(distillad.precision) vs fp32, on random-weight models at 64 px."""

from __future__ import annotations

import pytest
import torch
from scipy.ndimage import gaussian_filter1d

from distillad import precision as prec
from distillad.cli import main
from distillad.errors import ConfigError
from distillad.maps import bilinear_matrix, blur_matrix, combine_maps, gaussian_blur, smooth_combined
from distillad.precision import check_precision, predict_batch, prepare_for_inference
from distillad.registry import create_model, list_models

#: fused vs reference map stage: the same sums in another order (fp32 rounding only)
FUSED_TOL = 1e-5
#: folded vs unfolded BatchNorm: fp32 rounding of the folded weights, relative to the map's range
FOLD_TOL = 1e-5
#: bf16 / fp16 features vs fp32, max map difference relative to the fp32 map's range (measured: ≤ 1.6 % bf16)
PRECISION_TOL = {"bf16": 0.05, "fp16": 0.01}


def _native(p: str) -> bool:
    try:
        check_precision(p, "cpu")
        return True
    except ConfigError:
        return False


def test_blur_matrix_equals_scipy() -> None:
    x = torch.rand(37, dtype=torch.float64)
    for sigma in (1.0, 4.0, 12.0):  # 12: the kernel (radius 48) is wider than the signal
        ref = gaussian_filter1d(x.numpy(), sigma, mode="reflect", truncate=4.0)
        assert torch.allclose(blur_matrix(37, sigma) @ x, torch.from_numpy(ref), atol=1e-12)


@pytest.mark.parametrize("align_corners", [True, False])
def test_bilinear_matrix_equals_interpolate(align_corners: bool) -> None:
    x = torch.rand(2, 1, 7, 1, dtype=torch.float64)
    for n in (1, 5, 7, 23):
        ref = torch.nn.functional.interpolate(x, size=(n, 1), mode="bilinear", align_corners=align_corners)
        assert torch.allclose(bilinear_matrix(n, 7, align_corners) @ x[:, 0, :, 0].t(), ref[:, 0, :, 0].t(), atol=1e-12)


@pytest.mark.parametrize("mode", ["sum", "mean", "product"])
@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_fused_map_stage_equals_reference(mode: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    h, w = size
    maps = [torch.rand(3, 1, h // r, w // r) for r in (4, 8, 16)]
    ref = gaussian_blur(combine_maps(maps, size, mode), 4.0)
    out = smooth_combined(maps, size, mode, 4.0)
    assert out.shape == ref.shape == (3, 1, h, w)
    assert (out - ref).abs().max() <= FUSED_TOL * ref.abs().max()
    assert torch.allclose(smooth_combined(maps, size, mode, 0.0), combine_maps(maps, size, mode), atol=FUSED_TOL)


@pytest.mark.parametrize("name", ["rd", "stfpm", "dskd"])
def test_predict_equals_reference_path(name: str) -> None:
    torch.manual_seed(0)
    m = create_model(name, teacher_weights="random").eval()
    x = torch.rand(2, 3, 64, 64)
    (a, sa), (b, sb) = m.predict(x), m.predict_reference(x)
    assert (a - b).abs().max() <= FUSED_TOL * b.abs().max()
    assert torch.allclose(sa, sb, rtol=FUSED_TOL)


@pytest.mark.parametrize("teacher", ["efficientnet_lite0", "resnet18"])
@pytest.mark.parametrize("name", list_models())
def test_batchnorm_folding_keeps_outputs(name: str, teacher: str) -> None:
    torch.manual_seed(0)
    m = create_model(name, teacher=teacher, teacher_weights="random").eval()
    n_bn = sum(isinstance(q, torch.nn.BatchNorm2d) for q in m.modules())
    fast = prepare_for_inference(m, torch.device("cpu"))
    teacher_bn = {id(q) for q in fast.teacher.body.modules()}  # the faithful body; its folded copy runs
    left = sum(isinstance(q, torch.nn.BatchNorm2d) for q in fast.modules() if id(q) not in teacher_bn)
    left += sum(isinstance(q, torch.nn.BatchNorm2d) for q in fast.teacher.runner().modules())
    assert left == 0, f"only {n_bn - left} of {n_bn} BatchNorms folded"  # also those after timm's Conv2dSame
    assert sum(isinstance(q, torch.nn.BatchNorm2d) for q in m.modules()) == n_bn  # the original is untouched
    x = torch.rand(3, 3, 64, 64)
    a, _ = m.predict(x)
    b, _ = predict_batch(fast, x)
    scale = max(float(a.max() - a.min()), float(a.abs().max()))  # an untrained dmdd's map is a constant 0.5
    assert (a - b).abs().max() <= FOLD_TOL * scale


def test_inference_copy_is_channels_last_and_chunks_do_not_change_maps() -> None:
    torch.manual_seed(0)
    fast = prepare_for_inference(create_model("rd", teacher_weights="random"), torch.device("cpu"))
    convs = [q for q in fast.modules() if isinstance(q, torch.nn.Conv2d) and q.kernel_size != (1, 1)]
    assert convs and all(q.weight.is_contiguous(memory_format=torch.channels_last) for q in convs)
    x = torch.rand(7, 3, 64, 64)
    whole, s_whole = predict_batch(fast, x, chunk=len(x))
    for chunk in (1, 3, None):  # None: prec.CPU_CHUNK; 7 images leave a short last chunk
        m, s = predict_batch(fast, x, chunk=chunk)
        assert m.shape == whole.shape and s.shape == s_whole.shape
        assert (m - whole).abs().max() <= FUSED_TOL * (whole.max() - whole.min())
        assert torch.allclose(s, s_whole, rtol=FUSED_TOL)


@pytest.mark.parametrize("p", ["bf16", "fp16"])
def test_reduced_precision_maps_close_to_fp32(p: str) -> None:
    if not _native(p):
        pytest.skip(f"this CPU has no native {p} ({' / '.join(prec._CPU_FLAGS[p])} absent)")
    torch.manual_seed(0)
    m = prepare_for_inference(create_model("rd", teacher_weights="random"), torch.device("cpu"))
    x = torch.rand(2, 3, 64, 64)
    a, sa = predict_batch(m, x, "fp32")
    b, sb = predict_batch(m, x, p)
    assert b.dtype == torch.float32 and sb.dtype == torch.float32  # maps are computed in fp32
    assert (a - b).abs().max() <= PRECISION_TOL[p] * (a.max() - a.min())
    assert not torch.equal(a, b)  # the autocast did change the networks' arithmetic


def test_bad_or_unsupported_precision_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="'fp8'"):
        check_precision("fp8")
    monkeypatch.setattr(prec, "cpu_flags", lambda: frozenset({"avx2"}))
    with pytest.raises(ConfigError, match="bf16: this CPU lacks avx512_bf16"):
        check_precision("bf16", "cpu")
    assert check_precision("fp32", "cpu") == "fp32"


def test_cli_refuses_unsupported_precision_in_one_line(serve_run, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(prec, "cpu_flags", lambda: frozenset({"avx2"}))
    img = next((serve_run.parent / "data").rglob("*.png"))
    assert main(["predict", "--run", str(serve_run), str(img), "--out", str(tmp_path / "o"), "--device", "cpu",
                 "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bf16" in err and "fp32" in err, err
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit) as e:
        main(["test", "--run", str(serve_run), "--precision", "fp8"])
    assert e.value.code == 2


@pytest.mark.parametrize("size", [(64, 64), (37, 50), (255, 256)])  # even, odd and mixed "same" paddings
def test_same_padded_conv_equals_timm_conv2d_same(size: tuple[int, int]) -> None:
    from timm.layers import Conv2dSame

    from distillad.layers import SamePaddedConv, static_same_padding
    torch.manual_seed(0)
    for k, groups in ((3, 1), (5, 8), (3, 8)):
        net = torch.nn.Sequential(Conv2dSame(8, 8, k, stride=2, groups=groups), Conv2dSame(8, 8, k, stride=1))
        x = torch.randn(2, 8, *size)
        ref = net(x)
        assert static_same_padding(net) == 2 and all(isinstance(m, SamePaddedConv) for m in net)
        for inp in (x, x.contiguous(memory_format=torch.channels_last)):
            assert torch.allclose(net(inp), ref, atol=1e-5)
