"""Compact ground truth: codes decode to the loader's float32 maps bit for bit, and training is unchanged."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import scene as scene_pkg
import train
from arguments import ModelParams
from scene.cameras import Camera, load_camera, target_size
from scene.coded_maps import CodedMap, binary_map, from_codes, palette, uint8_map
from scene.dataset_readers import read_scene
from scene.endonerf_depth import load_endonerf_depth, load_mask
from scene.synthetic_blender import make_synthetic_blender
from scene.synthetic_endonerf import make_synthetic_endonerf
from utils.image_utils import read_image, resize_image, write_stored_image


def reference_load_camera(info, resolution, background, device="cpu") -> Camera:
    """The float32 loader as it was before the maps were coded (images / 255 or composited, float masks and depth)."""
    img = read_image(info.image_path)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    w, h = target_size(img.shape[1], img.shape[0], resolution, info.image_path)
    img = resize_image(img, w, h)
    if img.shape[2] == 4:
        a = img[..., 3:4].astype(np.float32) / 255.0
        rgb = img[..., :3].astype(np.float32) / 255.0 * a + background[None, None, :] * (1.0 - a)
    else:
        rgb = img.astype(np.float32) / 255.0
    sx, sy = w / info.width, h / info.height
    K = torch.tensor([[info.fx * sx, 0, info.cx * sx], [0, info.fy * sy, info.cy * sy], [0, 0, 1]], dtype=torch.float32)
    mask = depth = None
    if info.mask_path:
        mask = torch.from_numpy(load_mask(info.mask_path, w, h).astype(np.float32))[None]
    if info.depth_path:
        valid = None if mask is None else mask[0].numpy() > 0.5
        d = load_endonerf_depth(info.depth_path, info.depth_mode, info.depth_scale, valid)
        depth = torch.from_numpy(resize_image(d, w, h, nearest=True).astype(np.float32))[None]
    image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float()
    return Camera.from_tensors(info.uid, info.image_name, w, h, K, torch.tensor(info.world_to_cam, dtype=torch.float32),
                               image, info.time, mask, depth).to(device)


def same_bits(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype == torch.float32 and a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


def assert_loader_matches_reference(src, resolution: int, white: bool = False, image_bytes: int = 3, **model) -> None:
    """Every view's decoded maps equal the float loader's bit for bit; ``image_bytes`` per pixel of image codes
    (3 for RGB, 6 for RGBA: 16-bit alpha * 256 + value codes) plus 1/8 for a mask and at most 2 for depth."""
    args = ModelParams.defaults().replace(source_path=str(src), resolution=resolution, white_background=white, **model)
    info = read_scene(str(src), args)
    bg = scene_pkg.background_color(white)
    for ci in info.train_cameras + info.test_cameras:
        new, ref = load_camera(ci, resolution, bg), reference_load_camera(ci, resolution, bg)
        assert (new.image_width, new.image_height) == (ref.image_width, ref.image_height)
        assert same_bits(new.original_image, ref.original_image), ci.image_name
        assert same_bits(new.mask, ref.mask) and same_bits(new.depth, ref.depth), ci.image_name
        moved = new.to("cpu")  # the per-iteration decode gives the same floats
        assert same_bits(moved.original_image, ref.original_image) and same_bits(moved.depth, ref.depth)
        per_pixel = lambda c: sum(m.code_bytes for m in (c.image_data, c.mask_data, c.depth_data) if m) / c.image_width / c.image_height  # noqa: E731
        assert per_pixel(new) <= image_bytes + (ci.mask_path is not None) / 8 + 2 * (ci.depth_path is not None) and per_pixel(ref) >= 12


@pytest.fixture(scope="module")
def endo(tmp_path_factory):
    return make_synthetic_endonerf(tmp_path_factory.mktemp("endo") / "scene", n_frames=10, width=64, height=48, seed=0)


@pytest.fixture(scope="module")
def endo_8bit(tmp_path_factory, endo):
    """The same scene with 8-bit inverse-depth PNGs (as the c3vd sample stores them)."""
    import shutil

    root = tmp_path_factory.mktemp("endo8") / "scene"
    shutil.copytree(endo, root)
    for p in sorted((root / "depth").glob("*.png")):
        d = read_image(p, unchanged=True).astype(np.float64)
        inv = np.where(d > 0, 2000.0 / np.maximum(d, 1.0), 0.0)
        write_stored_image(p, np.clip(np.round(inv * 255 / inv.max()), 0, 255).astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def blender_rgba(tmp_path_factory):
    """A Blender scene whose images have a random alpha channel (composited on the background)."""
    root = make_synthetic_blender(tmp_path_factory.mktemp("rgba") / "scene", n_train=3, n_test=1, width=40, height=40)
    rng = np.random.default_rng(0)
    for p in sorted((root / "images").glob("*.png")):
        rgb = read_image(p)
        alpha = rng.integers(0, 256, rgb.shape[:2], dtype=np.uint8)
        alpha[:4] = 0  # fully transparent and
        alpha[-4:] = 255  # fully opaque rows too
        write_stored_image(p, np.dstack([rgb[..., ::-1], alpha]))  # stored order: BGRA
    return root


@pytest.mark.parametrize("resolution", [1, 2, 37])  # 37: a target width, an uneven scale for the area/nearest resizes
def test_endonerf_maps_equal_the_float_loader(endo, resolution):
    assert_loader_matches_reference(endo, resolution)


def test_inverse_8bit_depth_equals_the_float_loader(endo_8bit):
    assert_loader_matches_reference(endo_8bit, 2, depth_mode="inverse")


@pytest.mark.parametrize("white", [False, True])
def test_rgba_composite_equals_the_float_loader(blender_rgba, white):
    assert_loader_matches_reference(blender_rgba, 1, white=white, image_bytes=6)
    assert_loader_matches_reference(blender_rgba, 3, white=white, image_bytes=6)


def test_palette_codes_and_their_types():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 40000, (3, 5))
    keys[0, 0] = 0
    values = (keys * 0.37).astype(np.float32)
    codes, table = palette(values, keys)
    assert np.array_equal(table[codes], values) and len(table) == len(np.unique(keys))
    with pytest.raises(ValueError, match="not a function of the keys"):
        palette(np.arange(4, dtype=np.float32).reshape(2, 2), np.zeros((2, 2), np.int64))
    # more than 256 entries: 16-bit codes, including codes above 32767 (stored as int16)
    wide = np.arange(70000 - 65536, 70000, dtype=np.float32)[::-1].copy()
    codes16 = np.array([[[0, 255, 256, 32767, 32768, 65535]]])
    m = from_codes(codes16, wide[None])
    assert m.codes.dtype == torch.int16 and m.code_bytes == 12
    assert torch.equal(m.decode(), torch.from_numpy(wide[codes16]))
    assert from_codes(codes16 % 256, wide[None, :256]).codes.dtype == torch.uint8
    with pytest.raises(ValueError, match="wider than 16 bits"):
        from_codes(codes16, np.zeros((1, 65537), np.float32))


def test_per_channel_tables_and_plain_maps():
    table = torch.arange(12, dtype=torch.float32).view(3, 4)  # one table per channel
    codes = torch.tensor([[[0, 3]], [[1, 2]], [[3, 3]]], dtype=torch.uint8)
    assert torch.equal(CodedMap(codes, table).decode(), torch.tensor([[[0.0, 3.0]], [[5.0, 6.0]], [[11.0, 11.0]]]))
    x = torch.rand(1, 2, 3)
    assert CodedMap(x).decode() is x and CodedMap(x).decoded_on("cpu").decode() is x
    for width in (1, 7, 8, 9, 23):  # one bit per pixel, rows padded to whole bytes
        valid = torch.rand(2, 3, width) > 0.5
        m = binary_map(valid)
        assert m.codes.shape == (2, 3, (width + 7) // 8) and torch.equal(m.decode(), valid.float())
    # packed bits into one table per channel (values other than 0/1), against a brute-force lookup
    per_channel = torch.tensor([[-1.0, 2.5], [7.0, -3.0]])
    valid = torch.rand(2, 4, 13, generator=torch.Generator().manual_seed(3)) > 0.5
    packed = CodedMap(binary_map(valid).codes, per_channel, 13)
    assert torch.equal(packed.decode(), torch.stack([per_channel[c][valid[c].long()] for c in range(2)]))
    # 16-bit codes (above 32767 too) into one table per channel
    wide = torch.rand(2, 65536, generator=torch.Generator().manual_seed(4))
    keys = torch.tensor([[[0, 32767, 32768, 65535]], [[65535, 1, 40000, 0]]])
    coded16 = CodedMap(keys.to(torch.int32).to(torch.int16), wide)
    assert torch.equal(coded16.decode(), torch.stack([wide[c][keys[c]] for c in range(2)]))
    img = np.random.default_rng(1).integers(0, 256, (2, 3, 3), dtype=np.uint8)
    assert torch.equal(uint8_map(img).decode(), torch.from_numpy(img.transpose(2, 0, 1).astype(np.float32) / 255.0))


def test_training_is_bit_identical_to_the_float_loader(endo, tmp_path, monkeypatch):
    """Same losses and the same PLY bytes from the coded maps as from the float maps (masked colour + SSIM + depth).

    On the CPU: gsplat's backward accumulates gradients with atomics, so on a GPU two identical runs already differ
    in the last bits (seen on an H200); the CUDA decode is checked value by value below."""
    its = 12
    common = ["-s", str(endo), "--device", "cpu", "-r", "2", "--iterations", str(its), "--test_iterations", str(its), "--save_iterations",
              str(its), "--lambda_depth", "0.5", "--lambda_dssim", "0.2", "--num_init_points", "500", "--quiet"]
    coded = train.main(common + ["-m", str(tmp_path / "coded")])
    monkeypatch.setattr(scene_pkg, "load_camera", reference_load_camera)
    floats = train.main(common + ["-m", str(tmp_path / "float")])
    assert coded["test"] == floats["test"] and coded["train"] == floats["train"]
    ply = f"point_cloud/iteration_{its}/point_cloud.ply"
    assert (tmp_path / "coded" / ply).read_bytes() == (tmp_path / "float" / ply).read_bytes()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_decoding_on_cuda_gives_the_host_floats(endo):
    args = ModelParams.defaults().replace(source_path=str(endo), resolution=2)
    info = read_scene(str(endo), args)
    bg = scene_pkg.background_color(False)
    for ci in info.train_cameras[:3]:
        host = load_camera(ci, 2, bg)
        for stored in ("cpu", "cuda"):  # --data_device cpu / cuda, decoded on the compute device
            view = load_camera(ci, 2, bg, device=stored).to("cuda")
            assert view.original_image.is_cuda
            for a, b in ((view.original_image, host.original_image), (view.mask, host.mask), (view.depth, host.depth)):
                assert same_bits(a.cpu(), b)
