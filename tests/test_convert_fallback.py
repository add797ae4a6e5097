"""convert.py's fallback between the two COLMAP engines, on 8 real photos (colmap_bartoszek, downscaled).

The colmap program is a stand-in (written below, first on PATH) that does the real work through pycolmap
but whose mapper can fail the way Debian's COLMAP 3.8 does ("No good initial image pair found", exit 1) or
register only three photos; pycolmap in convert.py's child processes can be shadowed by a module whose mapper
finds no initial pair and writes nothing (what pycolmap 4.x does then: exit 0, no model). Neither the real
colmap program nor a GPU is needed.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import cv2
import pytest

import convert
from arguments import parse
from scene.colmap_loader import read_colmap_model
from tests.conftest import shared_scene
from utils.colmap_utils import EngineFailure
from utils.errors import UserError, run_cli

pycolmap = pytest.importorskip("pycolmap")

PHOTOS = 8  # consecutive views around the statue, so every one overlaps its neighbours
WIDTH, CROP_HEIGHT = 320, 656  # the photos are 1000 x 656..662 (undistorted crops): same size after the crop
FLAGS = ("--camera", "PINHOLE", "--single_camera", "--no_gpu")  # the photos are already undistorted

FAKE_COLMAP = '''#!{python} -I
"""Stand-in for Debian's colmap 3.8 program (tests): the real work through pycolmap; FAKE_COLMAP_MAPPER says
what the mapper does: ok, no_pair (3.8's last lines, exit 1) or partial (maps only the first 3 photos)."""
import os, sys
args = sys.argv[1:]
if not args or "-h" in args:
    print("COLMAP 3.8 -- Structure-from-Motion and Multi-View Stereo\\n(fake for tests, without CUDA)")
    sys.exit(0)
opt, mode = dict(zip(args[1::2], args[2::2])), os.environ.get("FAKE_COLMAP_MAPPER", "ok")
if args[0] == "mapper" and mode == "no_pair":
    print("Finding good initial image pair\\n  => No good initial image pair found.\\nElapsed time: 0.002 [minutes]")
    print("ERROR: failed to create sparse model")
    sys.exit(1)
import pycolmap
pycolmap.set_random_seed(0)
if args[0] == "feature_extractor":
    mode = pycolmap.CameraMode.SINGLE if opt["--ImageReader.single_camera"] == "1" else pycolmap.CameraMode.AUTO
    reader = pycolmap.ImageReaderOptions(camera_model=opt["--ImageReader.camera_model"])
    pycolmap.extract_features(opt["--database_path"], opt["--image_path"], camera_mode=mode, reader_options=reader,
                              device=pycolmap.Device.cpu)
elif args[0] == "exhaustive_matcher":
    pycolmap.match_exhaustive(opt["--database_path"], device=pycolmap.Device.cpu)
elif args[0] == "mapper":
    options = pycolmap.IncrementalPipelineOptions()
    if mode == "partial":
        options.image_names = sorted(os.listdir(opt["--image_path"]))[:3]
    pycolmap.incremental_mapping(opt["--database_path"], opt["--image_path"], opt["--output_path"], options=options)
elif args[0] == "image_undistorter":
    pycolmap.undistort_images(opt["--output_path"], opt["--input_path"], opt["--image_path"])
else:
    sys.exit("fake colmap: unknown command " + args[0])
'''

SHADOW_PYCOLMAP = '''"""Shadows pycolmap in convert.py's child processes (tests): the real package, except that the mapper finds
no initial pair and writes no model, as pycolmap 4.x does (exit 0)."""
import importlib, sys
from pathlib import Path
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if not p or Path(p).resolve() != HERE]
del sys.modules["pycolmap"]
real = importlib.import_module("pycolmap")
def no_initial_pair(*args, **kwargs):
    print("incremental_pipeline.cc:472] => No good initial image pair found.", flush=True)
    return {}
real.incremental_mapping = no_initial_pair
'''


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """PHOTOS real photos, centre-cropped to one size and downscaled to WIDTH pixels."""
    src = shared_scene("colmap_bartoszek") / "images"
    out = tmp_path_factory.mktemp("bartoszek") / "input"
    out.mkdir()
    for path in sorted(src.glob("*.jpg"))[:PHOTOS]:
        img = cv2.imread(str(path))
        top = (img.shape[0] - CROP_HEIGHT) // 2
        img = img[top:top + CROP_HEIGHT]
        small = cv2.resize(img, (WIDTH, round(CROP_HEIGHT * WIDTH / img.shape[1])), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(out / path.name), small, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return out


@pytest.fixture
def scene(photos, tmp_path) -> Path:
    (tmp_path / "scene").mkdir()
    os.symlink(photos, tmp_path / "scene" / "input")
    return tmp_path / "scene"


@pytest.fixture
def fake_colmap(tmp_path, monkeypatch):
    """Puts the stand-in colmap first on PATH; returns a setter for its mapper's behaviour."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "colmap"
    exe.write_text(FAKE_COLMAP.replace("{python}", sys.executable))
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return lambda mode: monkeypatch.setenv("FAKE_COLMAP_MAPPER", mode)


@pytest.fixture
def broken_pycolmap(tmp_path, monkeypatch):
    """convert.py's pycolmap steps import the shadow, whose mapper finds no initial pair."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "pycolmap.py").write_text(SHADOW_PYCOLMAP)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(shadow), os.environ.get("PYTHONPATH")])))


def _registered(scene: Path) -> int:
    return len(read_colmap_model(scene / "sparse" / "0").images)


def _no_leftovers(scene: Path) -> None:
    assert not (scene / "distorted" / "sparse.tmp").exists()


def test_colmap_38_no_initial_pair_hands_over_to_pycolmap(scene, fake_colmap, capsys):
    fake_colmap("no_pair")
    convert.main(["-s", str(scene), *FLAGS])
    out = capsys.readouterr().out
    exe = Path(os.environ["PATH"].split(os.pathsep)[0]) / "colmap"
    print(out)
    assert f"using colmap 3.8 ({exe}), then pycolmap {pycolmap.__version__} if it fails" in out
    assert (f"colmap 3.8 ({exe}) failed: mapping failed: no good initial image pair found (" in out
            and f"trying pycolmap {pycolmap.__version__} instead, from a new database" in out)
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"done: pycolmap {pycolmap.__version__} registered {PHOTOS}/{PHOTOS} images "
                           f"(colmap 3.8 ({exe}) failed)")
    assert _registered(scene) == PHOTOS and len(list((scene / "images").iterdir())) == PHOTOS
    assert len(read_colmap_model(scene / "distorted" / "sparse" / "0").images) == PHOTOS
    _no_leftovers(scene)
    log = (scene / "distorted" / "convert.log").read_text()
    assert "No good initial image pair found" in log and "trying pycolmap" in log  # both engines' output kept


def test_too_few_registered_hands_over_and_the_flag_accepts_them(scene, fake_colmap, capsys):
    fake_colmap("partial")
    convert.main(["-s", str(scene), *FLAGS])
    out = capsys.readouterr().out
    assert "failed: mapping registered only " in out and f"/{PHOTOS} images" in out
    assert "fewer than --min_registered 0.5 of them (4); trying pycolmap" in out
    assert out.strip().splitlines()[-1].startswith(f"done: pycolmap {pycolmap.__version__} registered "
                                                   f"{PHOTOS}/{PHOTOS} images")
    assert _registered(scene) == PHOTOS
    convert.main(["-s", str(scene), *FLAGS, "--min_registered", "0.25"])  # 2 or 3 of 8 are now enough
    out = capsys.readouterr().out
    assert "trying pycolmap" not in out
    partial = _registered(scene)
    assert 2 <= partial <= 3 and f"done: colmap 3.8 (" in out and f"registered {partial}/{PHOTOS} images;" in out
    _no_leftovers(scene)


def test_pycolmap_failure_hands_over_to_colmap(scene, fake_colmap, broken_pycolmap, capsys):
    fake_colmap("ok")
    convert.main(["-s", str(scene), *FLAGS, "--engine", "pycolmap"])
    out = capsys.readouterr().out
    assert (f"pycolmap {pycolmap.__version__} failed: mapping failed: no good initial image pair found (" in out
            and "; trying colmap 3.8 (" in out)
    assert out.strip().splitlines()[-1].startswith(f"done: colmap 3.8 (")
    assert f"registered {PHOTOS}/{PHOTOS} images (pycolmap {pycolmap.__version__} failed)" in out
    assert _registered(scene) == PHOTOS
    _no_leftovers(scene)


def test_both_failing_is_one_line_and_exit_2(scene, fake_colmap, broken_pycolmap, capsys):
    fake_colmap("no_pair")
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: convert.main(["-s", str(scene), *FLAGS]))
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "\n" not in err
    assert err.startswith("error: both COLMAP engines failed: colmap 3.8 (")
    assert err.count(": mapping failed: no good initial image pair found (") == 2
    assert f"; pycolmap {pycolmap.__version__}: mapping failed" in err
    assert re.search(r"; try more photos (from more viewpoints|with more overlap)", err)
    assert err.endswith("convert.log")
    assert not (scene / "sparse").exists() and not (scene / "images").exists()
    assert not (scene / "distorted" / "sparse").exists()
    _no_leftovers(scene)


def test_advice_names_the_flags_that_fit():
    (args,) = parse((convert.ConvertParams,), ["-s", "scene"], "convert.py")
    engines = [convert.Backend("colmap", "/usr/bin/colmap")]
    failures = [(engines[0], convert.TooFewRegistered("mapping registered only 7/100 images", None, 7))]
    tips = convert.advice(args, failures, engines, 100)
    assert "--min_registered 0.07 to accept the model of 7/100 images" in tips
    assert convert.required_images(0.07, 100) == 7  # the value offered does accept that model
    assert "a simpler --camera" in tips and "--single_camera" in tips
    assert "installing pycolmap (pip install pycolmap)" in tips
    tips = convert.advice(args.replace(camera="PINHOLE", single_camera=True), [(engines[0], EngineFailure("x"))],
                          engines + [convert.Backend("pycolmap")], 100)
    assert tips == "; try more photos with more overlap"


@pytest.mark.parametrize("value", ["-0.1", "1.5", "nan"])
def test_min_registered_range(tmp_path, value):
    with pytest.raises(UserError, match="--min_registered"):
        convert.main(["-s", str(tmp_path), "--min_registered", value])
