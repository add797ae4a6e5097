"""metrics.py's files: graphdeco's numbers-only results.json / per_view.json, our info beside them, per split."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import metrics
from scene.model_folder import MASK_SOURCE_FILE, ModelFolder
from utils.image_utils import save_image
from utils.lpips_local import BACKBONE_FILES, load_lpips

GRAPHDECO_KEYS = {"SSIM", "PSNR", "LPIPS"}


def _renders(root, split, iteration, seed, n=2, masked=False):
    """Write ``n`` render/gt pairs (and masks) as render.py does; returns the method folder."""
    gen = torch.Generator().manual_seed(seed)
    method = ModelFolder(root).renders_dir(split, iteration)
    for i in range(n):
        gt = torch.rand(3, 16, 16, generator=gen)
        save_image(method / "gt" / f"{i:05d}.png", gt)
        save_image(method / "renders" / f"{i:05d}.png", (gt + 0.1 * torch.rand(3, 16, 16, generator=gen)).clamp(0, 1))
        if masked:
            mask = torch.ones(1, 16, 16)
            mask[:, :4] = 0
            save_image(method / "masks" / f"{i:05d}.png", mask)
    if masked:
        (method / MASK_SOURCE_FILE).write_text(json.dumps({"mask": "masks/ (tool masks)"}))
    return method


def _load(path):
    return json.loads(path.read_text())


def test_results_keep_graphdecos_schema_and_info_goes_beside(tmp_path):
    _renders(tmp_path, "test", 7, seed=0, masked=True)
    returned = metrics.main(["-m", str(tmp_path), "--quiet"])[str(tmp_path)]
    folder = ModelFolder(tmp_path)
    results, per_view, info = (_load(p) for p in (folder.results_json(), folder.per_view_json(), folder.results_info_json()))
    assert results == returned
    for method, scores in results.items():
        assert set(scores) <= GRAPHDECO_KEYS and {"SSIM", "PSNR"} <= set(scores)
        assert all(isinstance(v, float) for v in scores.values())
        assert set(per_view[method]) == set(scores)
        assert all(set(v) == {"00000.png", "00001.png"} for v in per_view[method].values())
    i = info["ours_7"]
    assert i["num_views"] == 2 and i["mask"] == "masks/ (tool masks)" and "multiplied by the mask" in i["mask_protocol"]
    assert i["split"] == "test" and (i["lpips_net"] == "vgg") == ("LPIPS" in results["ours_7"])


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_net_is_named_or_its_absence_explained(tmp_path, net, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))  # no weights: never downloaded
    model, reason = load_lpips("cpu", net)
    assert model is None and BACKBONE_FILES[net] in reason and "local torch cache" in reason
    _renders(tmp_path / "m", "test", 3, seed=1)
    metrics.main(["-m", str(tmp_path / "m"), "--quiet", "--lpips_net", net])
    info = _load(ModelFolder(tmp_path / "m").results_info_json())["ours_3"]
    assert info["lpips_net"] is None and BACKBONE_FILES[net] in info["lpips_skipped"]
    assert "LPIPS" not in _load(ModelFolder(tmp_path / "m").results_json())["ours_3"]


def test_lpips_scores_land_in_results_with_the_net_in_the_info_file(tmp_path, monkeypatch):
    def fake_lpips(device, net):  # a stand-in metric: mean absolute difference of the [-1, 1] images
        return (lambda a, b: (a - b).abs().mean()), f"LPIPS({net})"

    monkeypatch.setattr(metrics, "load_lpips", fake_lpips)
    _renders(tmp_path, "test", 5, seed=2)
    res = metrics.main(["-m", str(tmp_path), "--quiet", "--lpips_net", "alex"])[str(tmp_path)]["ours_5"]
    assert set(res) == GRAPHDECO_KEYS and 0 < res["LPIPS"] < 0.2
    per_view = _load(ModelFolder(tmp_path).per_view_json())["ours_5"]["LPIPS"]
    assert res["LPIPS"] == pytest.approx(np.mean(list(per_view.values())))
    assert _load(ModelFolder(tmp_path).results_info_json())["ours_5"]["lpips_net"] == "alex"


def test_train_split_writes_its_own_files(tmp_path):
    _renders(tmp_path, "test", 9, seed=3)
    _renders(tmp_path, "train", 9, seed=4, n=3)
    folder = ModelFolder(tmp_path)
    test_res = metrics.main(["-m", str(tmp_path), "--quiet"])[str(tmp_path)]
    train_res = metrics.main(["-m", str(tmp_path), "--quiet", "--split", "train"])[str(tmp_path)]
    assert _load(folder.results_json()) == test_res != train_res  # test's files untouched by --split train
    assert _load(folder.results_json("train")) == train_res
    assert folder.results_json("train").name == "results_train.json"
    assert _load(folder.results_info_json("train"))["ours_9"]["split"] == "train"
    assert _load(folder.results_info_json("train"))["ours_9"]["num_views"] == 3
    assert len(_load(folder.per_view_json("train"))["ours_9"]["PSNR"]) == 3
