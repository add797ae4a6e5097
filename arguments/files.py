"""The parameter files: ``--config`` files and a model folder's ``cfg_args``, read as data only.

* ``--config FILE.py``: top-level ``Name = {literal dict}`` assignments (``ModelParams = {...}``,
  ``OptimizationParams = {...}``, ...), parsed with :mod:`ast`, never executed. ``_base_ =
  "other.py"`` (relative to the file, as in 4DGS / EndoGaussian configs) loads that file first.
* ``cfg_args``: graphdeco's ``Namespace(key=value, ...)`` repr of the loading parameters,
  parsed with ``ast.literal_eval`` on each value; keys it lacks take their defaults, keys we do not
  know (written by other 3DGS versions) are ignored.
"""
from __future__ import annotations

import ast
import dataclasses
import os
from argparse import Namespace
from pathlib import Path
from typing import Any, Sequence

from arguments.config import Params, Value, names
from scene.model_folder import CFG_ARGS
from utils.errors import UserError
from utils.io_utils import read_text, write_text

MAX_CONFIG_BYTES = 1 << 20  # a parameter file is a few kB; refuse anything huge before parsing it


def _literal(node: ast.AST, path: Path, line: int) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise UserError(f"{path}:{line}: value must be a literal (numbers, strings, lists, dicts)") from None


def load_config(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> dict:
    """Flat ``{key: value}`` of a config file (and its ``_base_`` chain, this file winning)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: config file not found (--config)")
    if p.resolve() in _seen:
        raise UserError(f"{p}: config _base_ chain loops back to itself")
    try:
        tree = ast.parse(read_text(p, "config", MAX_CONFIG_BYTES), filename=str(p))
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise UserError(f"{p}: not a valid config file (line {getattr(exc, 'lineno', '?')}): "
                        "write Name = {...} assignments of literal dicts") from None
    out: dict = {}
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # docstring
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise UserError(f"{p}:{node.lineno}: only 'Name = {{...}}' assignments of literal dicts are allowed")
        name, value = node.targets[0].id, _literal(node.value, p, node.lineno)
        if name == "_base_":
            if not isinstance(value, str):
                raise UserError(f"{p}:{node.lineno}: _base_ must be a path string, e.g. _base_ = \"default.py\"")
            out = {**load_config(p.parent / value, _seen + (p.resolve(),)), **out}
        elif isinstance(value, dict) and all(isinstance(k, str) for k in value):
            out.update(value)
        else:
            raise UserError(f"{p}:{node.lineno}: {name} must be a dict of parameter names to values")
    return out


def read_cfg_args(model_path: str | os.PathLike) -> dict[str, Any]:
    """``MODEL/cfg_args`` as a dict (parsed as data, never executed)."""
    path = Path(model_path) / CFG_ARGS
    if not Path(model_path).is_dir():
        raise UserError(f"{model_path}: model folder not found; -m must point to a folder written by train.py")
    if not path.is_file():
        raise UserError(f"{path}: not found; -m must point to a trained model folder (made by train.py)")
    text = read_text(path, "cfg_args", MAX_CONFIG_BYTES).strip()
    try:
        node = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        node = None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Namespace"
            and not node.args and all(kw.arg for kw in node.keywords)):
        raise UserError(f"{path}: malformed cfg_args (expected Namespace(key=value, ...)); retrain or restore the file")
    out = {}
    for kw in node.keywords:
        try:
            out[kw.arg] = ast.literal_eval(kw.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise UserError(f"{path}: value of {kw.arg} is not a literal; retrain or restore the file") from None
    return out


def cfg_args_values(model_path: str | os.PathLike, group: type[Params], keys: Sequence[str] | None = None) -> dict[str, Value]:
    """The saved values of ``group``'s fields (only ``keys`` when given), tagged with the file and key for errors."""
    saved = read_cfg_args(model_path)
    where = Path(model_path) / CFG_ARGS
    wanted = set(names(group)) if keys is None else set(keys) & set(names(group))
    return {k: Value(v, f"{where}: {k}") for k, v in saved.items() if k in wanted}


def write_cfg_args(model_path: str | os.PathLike, params: Params, *extra: tuple[Params, Sequence[str]]) -> None:
    """Save ``params`` as ``cfg_args`` (graphdeco's Namespace repr; render.py parses it as data), plus the named
    fields of other groups: ``extra`` = (group instance, field names) pairs."""
    values = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    for group, keys in extra:
        values.update({k: getattr(group, k) for k in keys})
    write_text(Path(model_path) / CFG_ARGS, repr(Namespace(**values)))
