"""Ground-truth maps (images, masks, depth) held compactly as integer codes into a table of float32 values.

A training view's image, mask and depth map take 12 + 4 + 4 bytes per pixel as float32; held as
codes they take 3 + 1/8 + 1..2 (``uint8`` codes when the table has at most 256 entries, 16-bit codes
up to 65,536; masks one bit per pixel). :meth:`CodedMap.decode` turns them back into float32 [C,H,W]
with a table lookup, ``table[codes]``: no arithmetic, so on every device the floats are the very values the loader
computed on the host, bit for bit. The loader builds the table with the same numpy expression the
float maps were computed with (:func:`unit_table` for 8-bit images, :func:`palette` for a map
that is a function of integer keys, such as a depth map of its PNG values).

Tables stay on the host (they are small and shared by the views that use them, like the 8-bit
image table); the codes live on the data device and are decoded where the map is used.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

U8_CODES = 256  # table sizes up to this get uint8 codes
U16_CODES = 65536  # larger tables (up to this) get 16-bit codes, stored as int16 (torch has no general uint16)
U16_MASK = 0xFFFF
BITS = 8  # 1-bit codes (masks) per byte
BINARY_TABLE = torch.tensor([[0.0, 1.0]])  # masks: code 0 = excluded, 1 = counted (shared by every mask)


@dataclass(frozen=True)
class CodedMap:
    """A float32 [C,H,W] map as ``codes`` [C,H,W] (uint8, or int16 holding uint16 codes) into ``table``
    [T,K] float32 (T = 1: one table for every channel; T = C: one per channel). ``table`` None: ``codes``
    is the float map itself (a map given as a tensor, or one already decoded). ``packed_width`` W: the
    codes are bits (K = 2), eight to a byte along the rows ([C,H,ceil(W/8)] uint8, first pixel in the
    high bit)."""

    codes: torch.Tensor
    table: torch.Tensor | None = None
    packed_width: int | None = None

    def decode(self) -> torch.Tensor:
        """float32 [C,H,W] on the codes' device: one ``index_select`` of int32 codes into the flattened tables
        (channel c's codes offset by c * K when each channel has its own table). Packed bits are looked up a
        byte at a time, in a [256 * T, 8] table of the values of each byte's eight pixels."""
        if self.table is None:
            return self.codes
        device = self.codes.device
        table = self.table.to(device)
        C = self.codes.shape[0]
        if self.packed_width is not None:
            table = table[:, byte_bits(device)]  # [T, 256, 8]
        idx = self.codes.int()
        if self.codes.dtype == torch.int16:
            idx = idx & U16_MASK
        if table.shape[0] > 1:  # one table per channel
            idx = idx + torch.arange(C, device=device, dtype=torch.int32).view(C, 1, 1) * table.shape[1]
        rows = table.reshape(-1, *table.shape[2:]) if self.packed_width is not None else table.reshape(-1)
        values = rows.index_select(0, idx.reshape(-1)).view(*self.codes.shape, *table.shape[2:])
        if self.packed_width is None:
            return values
        return values.flatten(-2)[..., : self.packed_width].contiguous()

    def stored_on(self, device) -> "CodedMap":
        """The same codes on ``device`` (the table stays on the host)."""
        return CodedMap(self.codes.to(device), self.table, self.packed_width)

    def decoded_on(self, device) -> "CodedMap":
        """The float32 map on ``device``, decoded there."""
        return CodedMap(self.stored_on(device).decode())

    @property
    def code_bytes(self) -> int:
        """Bytes of the per-pixel codes (the tables, small and mostly shared, not counted)."""
        return self.codes.numel() * self.codes.element_size()


def from_codes(codes: np.ndarray, table: np.ndarray) -> CodedMap:
    """CodedMap of integer ``codes`` [C,H,W] (0 <= code < K) into ``table`` [T,K] float32, in the smallest
    code type (K <= U16_CODES: every table here is indexed by 8- or 16-bit values)."""
    K = table.shape[-1]
    if K > U16_CODES:
        raise ValueError(f"from_codes: a table of {K} entries needs codes wider than 16 bits")
    stored = np.ascontiguousarray(codes.astype(np.uint8 if K <= U8_CODES else np.uint16))
    if stored.dtype == np.uint16:
        stored = stored.view(np.int16)
    return CodedMap(torch.from_numpy(stored), torch.from_numpy(np.ascontiguousarray(table, dtype=np.float32)))


@lru_cache(maxsize=None)
def unit_table() -> np.ndarray:
    """[1,256] float32: 8-bit value v -> v / 255 (numpy's float32 division, as the loader always computed it)."""
    return (np.arange(U8_CODES, dtype=np.uint8).astype(np.float32) / 255.0)[None]


def uint8_map(img: np.ndarray) -> CodedMap:
    """[H,W,C] uint8 image -> CodedMap of the [C,H,W] float32 image ``img / 255``."""
    return from_codes(img.transpose(2, 0, 1), unit_table())


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """[..., W] bool -> [..., ceil(W/8)] uint8, eight pixels to a byte, the first in the high bit."""
    W = bits.shape[-1]
    padded = torch.nn.functional.pad(bits.to(torch.uint8), (0, -W % BITS))
    weights = (1 << torch.arange(BITS - 1, -1, -1, device=bits.device)).to(torch.uint8)
    return (padded.view(*bits.shape[:-1], -1, BITS) * weights).sum(-1, dtype=torch.uint8)


@lru_cache(maxsize=None)
def byte_bits(device) -> torch.Tensor:
    """[256, 8] int64: row b holds the bits of byte value b, first pixel (high bit) first (:func:`pack_bits`'s order)."""
    shifts = torch.arange(BITS - 1, -1, -1)
    return ((torch.arange(U8_CODES)[:, None] >> shifts) & 1).to(device)


def binary_map(valid) -> CodedMap:
    """[1,H,W] bool (numpy or torch) -> CodedMap of the float32 0/1 map, one bit per pixel (codes on the
    array's device)."""
    valid = torch.as_tensor(valid)
    return CodedMap(pack_bits(valid), BINARY_TABLE, valid.shape[-1])


def palette(values: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes [H,W] int64 in 0..K-1, table [K] float32) with table[codes] == values bit for bit.

    ``values`` [H,W] float32 must be a function of ``keys`` [H,W] (non-negative integers, e.g. a
    depth map of its PNG values): equal keys, equal values; only the keys that occur get an entry.
    A ValueError if they are not (a bug in the caller, never bad input).
    """
    used = np.flatnonzero(np.bincount(keys.ravel()))
    remap = np.zeros(int(used[-1]) + 1 if used.size else 1, np.int64)
    remap[used] = np.arange(used.size)
    codes = remap[keys]
    table = np.zeros(max(used.size, 1), np.float32)
    table[codes.ravel()] = values.ravel()
    if not np.array_equal(table[codes].view(np.uint32), values.astype(np.float32, copy=False).view(np.uint32)):
        raise ValueError("palette: the values are not a function of the keys")
    return codes, table
