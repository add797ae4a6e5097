"""Suite files for full_eval.py: which scenes to run, with which config and flags (JSON, data only).

A suite is a JSON object::

    {
      "name": "endonerf", "title": "...", "protocol": "...",          # text for the table
      "seed": 0, "flags": ["--eval"],                                 # train.py flags for every scene
      "dino": {"model": "dinov2_vits14", "flags": [...], "train_flags": [...],     # optional
               "random_init": false},                          # true: always random weights (offline)
      "backbones": ["none", "dino_vits16", ...],                      # optional: one run per backbone
      "scenes": [
        {"name": "pulling", "source_path": "pulling_soft_tissues",
         "config": "arguments/endonerf/pulling.py", "flags": [], "dino": true},
        {"name": "tiny", "generate": {"kind": "endonerf", "frames": 12, "size": "48x48", "seed": 0}}
      ],
      "reference": {"source": "...", "scope": "...", "methods": {"Deform3DGS": {"PSNR": 37.9, ...}}}
    }

A relative ``source_path`` is resolved against ``--data_root`` (default: the suite file's
folder); a ``generate`` entry makes a synthetic scene under ``OUTPUT/scenes/NAME`` instead.
``config`` is a path relative to the repository. Every problem is a UserError naming the
file and the entry, raised before anything runs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from utils.errors import UserError
from utils.io_utils import read_json

ROOT = Path(__file__).resolve().parents[1]
NO_BACKBONE = "none"  # backbone-suite entry: train without DINO features
SCENES_DIR = "scenes"  # OUTPUT/scenes/NAME holds generated scenes
GENERATORS = {"endonerf": "scene.synthetic_endonerf", "blender": "scene.synthetic_blender"}
GENERATOR_ONLY_KEYS = {"endonerf": ("frames",), "blender": ("views", "test_views")}
REFERENCE_METRICS = ("PSNR", "SSIM", "LPIPS", "train_time_s", "fps")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

SUITE_KEYS = {"name": str, "title": str, "description": str, "protocol": str, "seed": int, "flags": list,
              "dino": dict, "backbones": list, "scenes": list, "reference": dict}
SCENE_KEYS = {"name": str, "source_path": str, "generate": dict, "config": str, "flags": list, "dino": bool}
DINO_KEYS = {"model": str, "flags": list, "train_flags": list, "random_init": bool}
GENERATE_KEYS = {"kind": str, "frames": int, "views": int, "test_views": int, "size": str, "seed": int}
REFERENCE_KEYS = {"source": str, "scope": str, "methods": dict}
STRING_LISTS = ("flags", "train_flags", "backbones")  # command-line words / model names


@dataclass
class Run:
    """One model to train: a scene, under one backbone for backbone suites (plain data, sent to Ray workers)."""

    name: str  # folder under OUTPUT: SCENE, or BACKBONE/SCENE
    scene: str
    backbone: str | None  # None: the suite's own DINO model (if any); NO_BACKBONE: no features
    source_path: str
    model_path: str
    train_args: list[str]
    extract_args: list[str] | None  # None: no feature extraction
    feature_dir: str | None


@dataclass
class Suite:
    path: Path
    data: dict
    scenes: list[dict]
    generate: dict[str, dict] = field(default_factory=dict)  # scene name -> generate entry

    @property
    def name(self) -> str:
        return self.data["name"]


def _check_keys(path: Path, where: str, obj: object, schema: dict) -> None:
    """UserError for a non-object, an unknown key or a value of the wrong type."""
    if not isinstance(obj, dict):
        raise UserError(f"{path}: {where} must be a JSON object")
    for key, value in obj.items():
        if key not in schema:
            raise UserError(f"{path}: {where}: unknown key '{key}' (allowed: {', '.join(schema)})")
        want = schema[key]
        kinds = want if isinstance(want, tuple) else (want,)
        if not isinstance(value, want) or (isinstance(value, bool) and bool not in kinds):
            wanted = " or ".join(k.__name__ for k in kinds)
            raise UserError(f"{path}: {where}: '{key}' must be a {wanted}, got {type(value).__name__}")
        if key in STRING_LISTS and not all(isinstance(v, str) for v in value):
            raise UserError(f"{path}: {where}: '{key}' must be a list of strings")


def _check_scene(path: Path, i: int, scene: dict, data_root: Path, has_dino: bool) -> str:
    """Validate ``scenes[i]``; returns its label for messages."""
    label = f"scenes[{i}] ({scene.get('name', '?')})" if isinstance(scene, dict) else f"scenes[{i}]"
    _check_keys(path, label, scene, SCENE_KEYS)
    if not NAME_RE.match(scene.get("name", "")):
        raise UserError(f"{path}: {label}: 'name' is required: letters, digits, '_', '-', '.'")
    if ("source_path" in scene) == ("generate" in scene):
        raise UserError(f"{path}: {label}: give exactly one of 'source_path' or 'generate'")
    if "source_path" in scene:
        src = data_root / scene["source_path"]
        if not src.is_dir():
            raise UserError(f"{path}: {label}: scene folder {src} not found; pass --data_root with the folder "
                            "that holds the suite's scenes, or fix 'source_path'")
    else:
        gen = scene["generate"]
        _check_keys(path, f"{label}.generate", gen, GENERATE_KEYS)
        kind = gen.get("kind")
        if kind not in GENERATORS:
            raise UserError(f"{path}: {label}.generate: 'kind' must be one of {', '.join(GENERATORS)}")
        specific = {k for keys in GENERATOR_ONLY_KEYS.values() for k in keys}
        wrong = sorted(set(gen) & specific - set(GENERATOR_ONLY_KEYS[kind]))
        if wrong:
            raise UserError(f"{path}: {label}.generate: '{wrong[0]}' does not apply to kind '{kind}'")
    if "config" in scene and not (ROOT / scene["config"]).is_file():
        raise UserError(f"{path}: {label}: config {scene['config']} not found (a path relative to the repository)")
    if scene.get("dino") and not has_dino:
        raise UserError(f"{path}: {label}: 'dino' is true but the suite has no 'dino' section")
    return label


def load_suite(path: str | Path, data_root: str | Path | None = None) -> Suite:
    """Read and validate a suite file; every error names the file and the entry."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: suite file not found; see suites/ for examples")
    data = read_json(path)
    _check_keys(path, "top level", data, SUITE_KEYS)
    for key in ("name", "scenes"):
        if key not in data:
            raise UserError(f"{path}: top level: '{key}' is required")
    if not NAME_RE.match(data["name"]):
        raise UserError(f"{path}: 'name' {data['name']!r}: use letters, digits, '_', '-', '.'")
    if "dino" in data:
        _check_keys(path, "dino", data["dino"], DINO_KEYS)
    if "backbones" in data and "dino" not in data:
        raise UserError(f"{path}: 'backbones' needs a 'dino' section (extraction and training flags)")
    for b in data.get("backbones", []):
        if not NAME_RE.match(b):
            raise UserError(f"{path}: backbones: {b!r} is not a model name")
    if "reference" in data:
        _check_reference(path, data["reference"])
    if not data["scenes"]:
        raise UserError(f"{path}: 'scenes' is empty")
    root = Path(data_root) if data_root is not None else path.parent
    names: set[str] = set()
    for i, scene in enumerate(data["scenes"]):
        label = _check_scene(path, i, scene, root, "dino" in data)
        if scene["name"] in names:
            raise UserError(f"{path}: {label}: a scene of that name is already listed")
        names.add(scene["name"])
    scenes = [dict(s, source_path=str((root / s["source_path"]).resolve())) if "source_path" in s else dict(s)
              for s in data["scenes"]]
    return Suite(path, data, scenes, {s["name"]: s["generate"] for s in scenes if "generate" in s})


def _check_reference(path: Path, ref: dict) -> None:
    _check_keys(path, "reference", ref, REFERENCE_KEYS)
    if not ref.get("source"):
        raise UserError(f"{path}: reference: 'source' (paper and table of the figures) is required")
    for method, figures in ref.get("methods", {}).items():
        _check_keys(path, f"reference.methods.{method}", figures, {k: (int, float) for k in REFERENCE_METRICS})


def scene_source(suite: Suite, scene: dict, out_dir: Path) -> Path:
    """Folder of a scene: its source_path, or OUTPUT/scenes/NAME for generated scenes."""
    if "generate" in scene:
        return out_dir / SCENES_DIR / scene["name"]
    return Path(scene["source_path"])


def generate_command(kind_entry: dict, out: Path) -> list[str]:
    """``python -m scene.synthetic_*`` arguments (after the interpreter) that write a generated scene."""
    opts = {"frames": "--frames", "views": "--views", "test_views": "--test_views", "size": "--size", "seed": "--seed"}
    args = ["-m", GENERATORS[kind_entry["kind"]], str(out)]
    for key, flag in opts.items():
        if key in kind_entry:
            args += [flag, str(kind_entry[key])]
    return args


def uses_random_init(suite: Suite, random_init_flag: bool) -> bool:
    """Whether DINO backbones run with random weights (``--random_init`` or the suite's dino.random_init)."""
    return "dino" in suite.data and (random_init_flag or suite.data["dino"].get("random_init", False))


def plan_runs(suite: Suite, out_dir: Path, random_init: bool = False) -> list[Run]:
    """Every model the suite trains, in suite order (backbone-major for backbone suites)."""
    dino = suite.data.get("dino")
    random_init = uses_random_init(suite, random_init)
    backbones = suite.data.get("backbones") or [None]
    runs = []
    for backbone in backbones:
        for scene in suite.scenes:
            name = scene["name"] if backbone is None else f"{backbone}/{scene['name']}"
            model = out_dir / name
            source = scene_source(suite, scene, out_dir)
            train = ["-s", str(source), "-m", str(model), "--seed", str(suite.data.get("seed", 0)), "--quiet"]
            if "config" in scene:
                train += ["--config", str(ROOT / scene["config"])]
            train += suite.data.get("flags", []) + scene.get("flags", [])
            use_dino = dino is not None and backbone != NO_BACKBONE and scene.get("dino", True)
            extract = feature_dir = None
            if use_dino:
                model_name = backbone or dino.get("model", "dinov2_vits14")
                feature_dir = str(model / "dino_features")
                extract = ["--image_dir", str(source / "images"), "--output_dir", feature_dir, "--model", model_name,
                           *dino.get("flags", []), *(["--random_init"] if random_init else [])]
                train += ["--dino_feature_dir", feature_dir, *dino.get("train_flags", []),
                          *(["--dino_random_init"] if random_init else [])]
            runs.append(Run(name, scene["name"], backbone, str(source), str(model), train, extract, feature_dir))
    return runs
