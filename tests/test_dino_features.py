"""DINO extractor, extraction script and feature store (tiny random-weight ViTs, no downloads)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import extract_dino_features as xdf
from tests.conftest import ROOT
from utils.dino_utils import MODEL_ALIASES, DinoExtractor, resolve_model_name
from utils.errors import UserError
from utils.feature_store import META_NAME, DinoFeatureStore, open_feature_store
from utils.io_utils import read_json, write_json

MODEL = "dino_vits16"
RES = 64  # long side of the ViT input: a 4 x 3 patch grid for 4:3 images, fast on CPU
LAYERS = ["3", "11"]
SIZES = [(48, 64)] * 3 + [(64, 48)]  # three landscape images and one portrait (batched by size)
FP16_REL_TOL = 1e-3  # float16 keeps 11 significant bits: relative rounding error <= 2**-11 ~ 4.9e-4


def make_extractor(**kw) -> DinoExtractor:
    args = dict(model=MODEL, layers=[3, 11], resolution=RES, random_init=True)
    args.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DinoExtractor(**args)


def write_images(folder: Path) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i, (h, w) in enumerate(SIZES):
        cv2.imwrite(str(folder / f"{i}_color.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def run_extract(image_dir: Path, out_dir: Path, *extra: str) -> None:
    argv = ["--image_dir", str(image_dir), "--output_dir", str(out_dir), "--model", MODEL, "--resolution", str(RES),
            "--layers", *LAYERS, "--random_init", "--device", "cpu", "--batch_size", "2", *extra]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xdf.main(argv)


def gt_image(image_dir: Path, name: str) -> torch.Tensor:
    return xdf.read_rgb(image_dir / f"{name}.png")


@pytest.fixture(scope="module")
def ext() -> DinoExtractor:
    """The default test extractor (stateless, so one instance serves every test)."""
    return make_extractor()


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> tuple[Path, Path]:
    """(image dir, feature dir) extracted once in float32 with previews."""
    base = tmp_path_factory.mktemp("dino")
    write_images(base / "images")
    run_extract(base / "images", base / "feats", "--preview")
    return base / "images", base / "feats"


@pytest.fixture
def feats_copy(extracted, tmp_path) -> tuple[Path, Path]:
    """A private copy of the extracted folder that a test may damage."""
    images, feats = extracted
    shutil.copytree(feats, tmp_path / "feats")
    return images, tmp_path / "feats"


def test_every_short_name_is_a_timm_model():
    import timm

    pretrained = set(timm.list_models(pretrained=True))
    for short, name in MODEL_ALIASES.items():
        assert timm.is_model(name), short
        assert name in pretrained, f"{short} -> {name} has no pretrained tag in timm"
        assert resolve_model_name(short) == (name, short)
    assert resolve_model_name("vit_small_patch14_dinov2.lvd142m")[1] == "dinov2_vits14"
    with pytest.raises(UserError, match="dinov2_vits14"):
        resolve_model_name("dinov9_huge")


def test_input_and_feature_sizes(ext):
    assert ext.input_size(48, 64) == (48, 64) and ext.feature_size(48, 64) == (3, 4)
    assert ext.input_size(1080, 1350) == (48, 64)  # long side -> RES, aspect kept, multiples of 16
    assert ext.feature_size(10, 1000) == (1, 4)  # at least one patch
    v2 = make_extractor(model="dinov2_vits14", layers=None, resolution=None)
    assert v2.resolution == 518 and v2.patch_size == 14 and v2.layers == [11]
    assert v2.input_size(512, 640) == (420, 518)  # 37 cells long side, round(29.6) = 30 cells short side


def test_bad_layers_and_resolution_are_user_errors():
    with pytest.raises(UserError, match="blocks 0..11"):
        make_extractor(layers=[12])
    with pytest.raises(UserError, match="patch size"):
        make_extractor(resolution=8)


def test_features_are_differentiable_and_model_frozen(ext):
    img = torch.rand(2, 3, 45, 60, requires_grad=True)
    out = ext(img)
    assert out.shape == (2, 2, 384, 3, 4)
    out.square().mean().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0 and torch.isfinite(img.grad).all()
    assert all(not p.requires_grad and p.grad is None for p in ext.model.parameters())
    assert not ext.model.training
    assert ext.cls(img).shape == (2, 384)


def test_stored_features_equal_on_the_fly(extracted, ext):
    images, feats = extracted
    store = DinoFeatureStore(feats, ext)
    for i, (h, w) in enumerate(SIZES):
        gt = gt_image(images, f"{i}_color")
        got = store.get(f"{i}_color.png", gt_image=gt)
        with torch.no_grad():
            ref = ext.features(gt[None])[0]
        assert got.dtype == torch.float32 and got.shape == (768, *ext.feature_size(h, w))
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert store.gt_extractor_calls == 0
    meta = read_json(feats / META_NAME)
    assert meta["complete"] and meta["dtype"] == "float32" and meta["channels"] == 768
    assert meta["images"]["3_color"]["stored_size"] == [4, 3]


def test_fp16_pca_and_compute_match_store(extracted, ext, tmp_path):
    images, _ = extracted
    run_extract(images, tmp_path / "f16", "--fp16", "--pca_dim", "6")
    arr = np.load(tmp_path / "f16" / "0_color.npy")
    assert arr.dtype == np.float16 and arr.shape == (6, 3, 4)
    store = DinoFeatureStore(tmp_path / "f16", ext)
    gt = gt_image(images, "0_color")
    with torch.no_grad():
        ref = store.project(ext.features(gt[None]))[0]
        via_compute = store.compute(gt[None])[0]
    got = store.get("0_color", gt_image=gt)
    assert (got - ref).abs().max() <= FP16_REL_TOL * ref.abs().max()
    torch.testing.assert_close(via_compute, ref)


def test_upsampled_features_at_image_size(extracted, ext, tmp_path):
    images, _ = extracted
    run_extract(images, tmp_path / "hr", "--upsample", "hr", "--hr_shifts", "4", "--pca_dim", "4")
    store = DinoFeatureStore(tmp_path / "hr", ext)
    gt = gt_image(images, "3_color")
    got = store.get("3_color", gt_image=gt)
    assert got.shape == (4, 64, 48)  # full image resolution
    with torch.no_grad():
        torch.testing.assert_close(got, store.compute(gt[None])[0], rtol=1e-4, atol=1e-4)
    assert read_json(tmp_path / "hr" / META_NAME)["hr"] == {"shifts": 4, "shift_px": 2, "flip": False}


def test_resume_skips_done_images(feats_copy, capsys):
    images, out = feats_copy
    (out / "2_color.npy").unlink()
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}
    run_extract(images, out)
    assert "3 of 4 images already done" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy") if p.name in stamps} == stamps
    assert (out / "2_color.npy").is_file() and read_json(out / META_NAME)["complete"]


def test_changed_settings_need_overwrite(feats_copy):
    images, feats = feats_copy
    with pytest.raises(UserError, match=r"pca_dim=None .*pca_dim=4.*--overwrite"):
        run_extract(images, feats, "--pca_dim", "4")
    run_extract(images, feats, "--pca_dim", "4", "--overwrite")
    assert np.load(feats / "1_color.npy").shape == (4, 3, 4)


def test_preview_pngs_written(extracted):
    _, feats = extracted
    pngs = sorted((feats / "preview").glob("*_pca.png"))
    assert [p.name for p in pngs] == [f"{i}_color_pca.png" for i in range(4)]
    img = cv2.imread(str(pngs[0]))
    assert img.shape == (48, 64, 3) and img.std() > 0  # 3 x 4 cells scaled by the patch size
    assert read_json(feats / META_NAME)["preview"]["lo"]


def test_mismatched_meta_is_a_one_line_error(extracted):
    _, feats = extracted
    for kw, field in (({"layers": [11]}, "layers"), ({"resolution": 96}, "resolution"),
                      ({"model": "dino_vits8"}, "model")):
        with pytest.raises(UserError) as err:
            DinoFeatureStore(feats, make_extractor(**kw))
        msg = str(err.value)
        assert META_NAME in msg and f"{field}=" in msg and "\n" not in msg


def test_corrupt_and_wrong_shape_files(feats_copy, ext):
    images, feats = feats_copy
    (feats / "0_color.npy").write_bytes(b"not an npy file")
    np.save(feats / "1_color.npy", np.zeros((5, 3, 4), np.float32))
    np.save(feats / "2_color.npy", np.zeros((768, 5, 5), np.float32))
    store = DinoFeatureStore(feats, ext)
    with pytest.raises(UserError, match="0_color.npy"):
        store.get("0_color")
    with pytest.raises(UserError, match=r"1_color.npy: shape \(5, 3, 4\)"):
        store.get("1_color")
    with pytest.raises(UserError, match=r"2_color.npy: spatial size \(5, 5\)"):
        store.get("2_color", gt_image=gt_image(images, "2_color"))


def test_missing_file_computed_on_the_fly_once_warned(feats_copy, ext):
    images, feats = feats_copy
    (feats / "1_color.npy").unlink()
    store = DinoFeatureStore(feats, ext)
    gt = gt_image(images, "1_color")
    with pytest.warns(UserWarning, match="1_color.npy"):
        got = store.get("1_color", gt_image=gt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.get("1_color", gt_image=gt)  # cached: no second warning, no second run
    assert store.gt_extractor_calls == 1
    with torch.no_grad():
        torch.testing.assert_close(got, ext.features(gt[None])[0])
    with pytest.raises(UserError, match="no ground-truth image"):
        store.get("9_color")


def test_empty_missing_and_unfinished_folders(tmp_path, feats_copy, ext):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty"):
        DinoFeatureStore(tmp_path / "empty", ext)
    with pytest.raises(UserError, match="not found"):
        DinoFeatureStore(tmp_path / "nope", ext)
    _, feats = feats_copy
    meta = read_json(feats / META_NAME)
    write_json(feats / META_NAME, {**meta, "complete": False})
    with pytest.raises(UserError, match="did not finish"):
        DinoFeatureStore(feats, ext)


def test_open_feature_store_rebuilds_the_extractor(extracted):
    _, feats = extracted
    with pytest.warns(UserWarning, match="RANDOM weights"):
        store = open_feature_store(feats, random_init=True)
    assert store.extractor.layers == [3, 11] and store.extractor.resolution == RES


def test_bad_image_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        run_extract(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "0.png").write_bytes(b"garbage")
    with pytest.raises(UserError, match="0.png: cannot decode"):
        run_extract(tmp_path / "bad", tmp_path / "out2")


def test_weights_files_load_and_bad_files_fail(tmp_path, ext):
    ref = ext
    sd = ref.model.state_dict()
    torch.save(sd, tmp_path / "w.pth")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    x = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        want = ref(x)
        for name in ("w.pth", "w.safetensors"):
            torch.testing.assert_close(make_extractor(random_init=False, weights=tmp_path / name)(x), want)
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    with pytest.raises(UserError, match="bad.pth: cannot read weights"):
        make_extractor(random_init=False, weights=tmp_path / "bad.pth")
    torch.save({"blocks.0.norm1.weight": torch.ones(3)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="do not match the model"):
        make_extractor(random_init=False, weights=tmp_path / "other.pth")


def test_original_dinov2_checkpoint_format(tmp_path):
    ref = make_extractor(model="dinov2_vits14", layers=[11], resolution=56)
    sd = dict(ref.model.state_dict())
    sd["mask_token"] = torch.zeros(1, 384)  # the facebookresearch checkpoints carry it
    torch.save(sd, tmp_path / "dinov2_vits14_pretrain.pth")
    loaded = make_extractor(model="dinov2_vits14", layers=[11], resolution=56, random_init=False,
                            weights=tmp_path / "dinov2_vits14_pretrain.pth")
    x = torch.rand(1, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref(x))


def _offline_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE", "TORCH_HOME"))}
    env.update(HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"), PYTHONPATH=str(ROOT))
    return env


def test_missing_pretrained_weights_offline_is_one_line(tmp_path):
    write_images(tmp_path / "images")
    proc = subprocess.run([sys.executable, str(ROOT / "extract_dino_features.py"), "--image_dir",
                           str(tmp_path / "images"), "--output_dir", str(tmp_path / "out"), "--model", MODEL],
                          env=_offline_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: pretrained weights for vit_small_patch16_224.dino")
    assert "--weights" in lines[0] and "pretrained=True" in lines[0]


CACHE_SCRIPT = """
import os, sys, torch, warnings
from pathlib import Path
from safetensors.torch import save_file
from utils.dino_utils import DinoExtractor
warnings.simplefilter("ignore")
ref = DinoExtractor("dino_vits16", resolution=64, random_init=True)
x = torch.rand(1, 3, 48, 64)
hub = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
hub.mkdir(parents=True)
torch.save(ref.model.state_dict(), hub / "dino_deitsmall16_pretrain.pth")  # file name of the original URL
with torch.no_grad():
    assert torch.equal(DinoExtractor("dino_vits16", resolution=64)(x), ref(x))
(hub / "dino_deitsmall16_pretrain.pth").unlink()
repo = Path(sys.argv[1]) / "hub" / "models--timm--vit_small_patch16_224.dino"
(repo / "refs").mkdir(parents=True)
(repo / "refs" / "main").write_text("0" * 40)
(repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
save_file({k: v.contiguous() for k, v in ref.model.state_dict().items()},
          str(repo / "snapshots" / ("0" * 40) / "model.safetensors"))
cached = DinoExtractor("dino_vits16", resolution=64)
with torch.no_grad():
    assert torch.equal(cached(x), ref(x))
print("ok", cached.meta()["weights"])
"""


def test_pretrained_weights_from_the_offline_caches(tmp_path):
    """torch hub checkpoint folder (original URL file name), then the Hugging Face cache timm uses."""
    env = _offline_env(tmp_path)
    proc = subprocess.run([sys.executable, "-c", CACHE_SCRIPT, env["HF_HOME"]], env=env, capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ok pretrained" in proc.stdout
