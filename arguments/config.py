"""Typed, validated configuration: frozen dataclasses that become command-line flags.

Every parameter group (``ModelParams``, ``OptimizationParams``, ``PipelineParams`` and each
script's own) is a frozen dataclass whose fields are declared with :func:`param`: a default,
one help line (shown by ``-h``), and optionally a range (``ge``/``gt``/``le``), a short flag, or
``Literal[...]`` choices in the type. The fields' names are the flags' names (graphdeco's).

Values come in layers, later layers winning: the dataclass defaults, a model folder's saved
``cfg_args`` (render.py, cluster.py, ...), a ``--config`` file, then the flags typed on the
command line. The command line is parsed with every default suppressed, so argparse returns only
what the user typed, however it was spelled (``-r4``, ``--res 4``, ``--resolution=4``). Each value
remembers where it came from, and :func:`build` checks every field once (type, choices, range,
finiteness) and names that source in a one-line :class:`UserError` before anything is loaded.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Sequence, TypeVar, get_args, get_origin

from utils.errors import UserError

P = TypeVar("P", bound="Params")


def param(default: Any, help: str, *, short: str | None = None, ge: float | None = None, gt: float | None = None,
          le: float | None = None, allowed: Sequence[Any] = (), aliases: Sequence[str] = ()) -> Any:
    """A config field: ``default``, a one-line ``help``, an optional one-letter ``short`` flag and range.

    ``ge``/``gt``/``le`` bound numbers (list elements too); ``allowed`` lists extra values that
    are accepted outside the range (e.g. -1 meaning "auto"); ``aliases`` are other option strings
    for the same flag (e.g. ``("--dir_images",)``: the name another repository's scripts use).
    """
    bad = [a for a in aliases if not (a.startswith("--") and len(a) > 2)]
    if bad:
        raise ValueError(f"aliases must be long options such as --name, got {bad}")
    meta = {"help": help, "short": short, "ge": ge, "gt": gt, "le": le, "allowed": tuple(allowed), "aliases": tuple(aliases)}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda d=default: list(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Value:
    """A raw value and where it came from (``--flag``, ``FILE: key``) for error messages."""

    value: Any
    source: str


@dataclass(frozen=True)
class Params:
    """Base of the parameter groups. Subclasses are frozen dataclasses of :func:`param` fields."""

    GROUP: ClassVar[str] = "parameters"

    def check(self) -> None:
        """Cross-field rules of the group (override); raise :class:`UserError` naming the flags."""

    @classmethod
    def defaults(cls: type[P]) -> P:
        return build(cls, {})

    def replace(self: P, **changes: Any) -> P:
        """A validated copy with ``changes`` (values from code, named as flags in errors)."""
        values = {k: Value(getattr(self, k), f"--{k}") for k in names(type(self))}
        values.update({k: Value(v, f"--{k}") for k, v in changes.items()})
        return build(type(self), values)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in names(type(self))}


def names(cls: type[Params]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _hints(cls: type[Params]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe_type(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(map(str, get_args(tp)))
    if origin is list:
        return f"a list of {_describe_type(get_args(tp)[0])}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("none" if a is type(None) else _describe_type(a) for a in get_args(tp))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _range_text(meta: dict) -> str:
    parts = []
    if meta["ge"] is not None:
        parts.append(f">= {meta['ge']:g}")
    if meta["gt"] is not None:
        parts.append(f"> {meta['gt']:g}")
    if meta["le"] is not None:
        parts.append(f"<= {meta['le']:g}")
    text = " and ".join(parts)
    if meta["allowed"] and text:
        text += " (or " + ", ".join(map(str, meta["allowed"])) + ")"
    return text


def _coerce(tp: Any, value: Any, meta: dict, where: str) -> Any:
    """``value`` checked against type ``tp`` and the field's range; a UserError naming ``where`` otherwise."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in get_args(tp):
            return None
        inner = [a for a in get_args(tp) if a is not type(None)]
        return _coerce(inner[0], value, meta, where)
    if origin is Literal:
        if value not in get_args(tp):
            raise UserError(f"{where}: {value!r} is not a valid choice; choose {', '.join(map(str, get_args(tp)))}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected {_describe_type(tp)}, got {value!r}")
        return [_coerce(get_args(tp)[0], v, meta, where) for v in value]
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise UserError(f"{where}: {value} is not a finite number")
    elif tp is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return value
    if tp in (int, float) and value not in meta["allowed"]:
        bad = ((meta["ge"] is not None and value < meta["ge"]) or (meta["gt"] is not None and value <= meta["gt"])
               or (meta["le"] is not None and value > meta["le"]))
        if bad:
            raise UserError(f"{where}: {value:g} is out of range; it must be {_range_text(meta)}")
    return value


def build(cls: type[P], values: dict[str, Value], check: bool = True) -> P:
    """An instance of ``cls`` from the layered ``values`` (defaults for the rest), every field checked;
    ``check`` also runs the group's cross-field rules."""
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            v = values[f.name]
            kwargs[f.name] = _coerce(hints[f.name], v.value, f.metadata, v.source)
        else:
            kwargs[f.name] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    obj = cls(**kwargs)
    if check:
        obj.check()
    return obj


# ----------------------------------------------------------------------------- argparse adapter


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one-line :class:`UserError` s (exit 2 through run_cli)."""

    def error(self, message: str) -> typing.NoReturn:
        raise UserError(f"{message} (see {self.prog} -h)")


def help_line(meta: dict, tp: Any, default: Any) -> str:
    text = meta["help"]
    rng = _range_text(meta)
    if rng:
        text += f"; {rng}"
    if get_origin(tp) is Literal:
        text += "; one of " + " | ".join(map(str, get_args(tp)))
    if default not in ("", None, False, []):
        text += f" (default: {' '.join(map(str, default)) if isinstance(default, list) else default})"
    return text.replace("%", "%%")


def add_group(parser: argparse.ArgumentParser, cls: type[Params]) -> None:
    """Add ``cls``'s fields as flags (defaults suppressed: only typed flags reach the namespace)."""
    group = parser.add_argument_group(cls.GROUP)
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        flags = [f"--{f.name}"] + ([f"-{f.metadata['short']}"] if f.metadata["short"] else []) + list(f.metadata["aliases"])
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_line(f.metadata, tp, default), "dest": f.name}
        base = tp
        if get_origin(tp) in (typing.Union, types.UnionType):
            base = [a for a in get_args(tp) if a is not type(None)][0]
        if base is bool:
            kw["action"] = "store_true"
        elif get_origin(base) is list:
            kw.update(nargs="+", type=get_args(base)[0], metavar="N")
        elif get_origin(base) is Literal:
            choices = get_args(base)
            kw.update(choices=list(choices), type=type(choices[0]), metavar="{" + "|".join(map(str, choices)) + "}")
        else:
            kw["type"] = base
        group.add_argument(*flags, **kw)


def make_parser(description: str, groups: Sequence[type[Params]]) -> argparse.ArgumentParser:
    parser = _Parser(description=description)
    for cls in groups:
        add_group(parser, cls)
    return parser


def explicit_values(parser: argparse.ArgumentParser, argv: Sequence[str]) -> dict[str, Value]:
    """Only the flags typed in ``argv``, each tagged with the flag's name."""
    ns = parser.parse_args(list(argv))
    return {k: Value(v, f"--{k}") for k, v in vars(ns).items()}


def split_groups(groups: Sequence[type[Params]], values: dict[str, Value], where: str | None = None) -> list[Params]:
    """Build every group from one flat layer of values.

    With ``where`` (a file), the layer is checked on its own: keys no group knows and bad values
    are errors naming it; cross-field rules wait for the merged layers.
    """
    known = {n for cls in groups for n in names(cls)}
    unknown = sorted(set(values) - known)
    if unknown and where:
        raise UserError(f"{where}: unknown parameter(s) {', '.join(unknown)}")
    return [build(cls, {k: v for k, v in values.items() if k in names(cls)}, check=where is None) for cls in groups]
