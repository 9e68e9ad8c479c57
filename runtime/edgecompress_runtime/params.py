"""Weights as stored in a bundle, fp32 or quantized, behind one small interface.

Storage kinds (manifest ``params[name]["kind"]``; member arrays in brackets):
- ``fp32``        [data: float32]
- ``rowwise``     [codes: uint8 [R, ceil(D*bits/8)], scale: float16 [R], bias: float16 [R]]
                  row r = codes * scale[r] + bias[r]; bits 8, 4, 2 or 1, low bits first
                  (the FBGEMM / PyTorch fused-rowwise layout, split into arrays)
- ``channel_int8`` [codes: int8 [O, I], scale: float32 [O]]  w = codes * scale[o]
- ``fp16``        [data: float16]  the fp32 weight rounded to fp16 (bits 16): tables gather
                  fp16 rows and widen only those to fp32 (half the memory of fp32);
                  Linear weights are widened once, on first use; all arithmetic is fp32
- ``csr``         [data: float32 [nnz], indices: int16/int32 [nnz], indptr: int32 [O+1]]
                  a sparse Linear weight, densified once at load
- ``pq``          [codes: uint8 [R, ceil(M*bits/8)], codebooks: float16/float32 [M, K, D/M]]
                  product quantization (bits 8 or 4, K <= 2**bits): row r is the concatenation
                  of codebooks[m, code[r, m]] over the M sub-spaces; 4-bit codes are packed two
                  per byte, low bits first. Gathers look up only the gathered rows' codes and
                  their codebook entries: the table is never materialized
- ``clustered``   [codes: uint8 [O, ceil(I*bits/8)], codebook: float16/float32 [G, K]]
                  a k-means clustered (weight-shared) Linear weight [O, I], bits 2..8,
                  K <= 2**bits shared values per layer (G = 1) or per output row (G = O):
                  w[o, i] = codebook[o if G > 1 else 0, code[o, i]]; codes packed as a
                  little-endian bit stream per row (pack_bits). Materialized as fp32 once,
                  on first use, like every Linear weight: what the kind saves is bundle
                  bytes, not run-time memory

Optional arrays on tables, applied on gather in this order:
- ``remap`` int32 [R]: logical row -> stored row (row pruning: rare rows share
  one fallback row, so the stored table has K + 1 <= R rows)
- ``proj``  float32 [d, D]: stored rows have d < D columns and are projected
  back to the width the graph expects (per-table dimension reduction)
- ``act_scale`` float32 [1] on ``channel_int8`` Linear weights with ``act:
  "static"``: the calibrated activation scale (``act: "dynamic"`` computes a
  scale per row at run time). Activations are rounded to int8 and multiplied
  in fp32, which is exact for int8 x int8 sums below 2**24.

Gathers use ``np.take`` on flattened ids (measured 3x faster than fancy
indexing). Quantized tables stay quantized in memory and only gathered rows are
dequantized; that gather is 2-7x slower than an fp32 gather but needs 4x less
memory (benchmarks/runtime_gather.py). Tables whose fp32 form is at most
DEQUANT_AT_LOAD_BYTES are dequantized once at load instead: the memory is
negligible and the gathers are as fast as fp32. Linear weights are dequantized
once, on first use: they are a few percent of a recommender's bytes.
"""
from __future__ import annotations

import math
import os

import numpy as np

from .errors import BundleError, InputError

KINDS = {
    "fp32": ("data",),
    "rowwise": ("codes", "scale", "bias"),
    "channel_int8": ("codes", "scale"),
    "fp16": ("data",),
    "csr": ("data", "indices", "indptr"),
    "pq": ("codes", "codebooks"),
    "clustered": ("codes", "codebook"),
}
OPTIONAL = ("remap", "proj", "act_scale")
DEQUANT_AT_LOAD_BYTES = int(float(os.environ.get("EDGECOMPRESS_RUNTIME_DEQUANT_AT_LOAD_MB", "1")) * 2**20)


def unpack_bits(packed: np.ndarray, bits: int, dim: int) -> np.ndarray:
    """uint8 [..., ceil(dim*bits/8)] -> uint8 codes [..., dim], low bits first."""
    if bits == 8:
        return packed
    if 8 % bits:
        return _unpack_stream(packed, bits, dim)
    per = 8 // bits
    mask = (1 << bits) - 1
    shifts = np.arange(per, dtype=np.uint8) * bits
    out = (packed[..., :, None] >> shifts) & mask
    return out.reshape(packed.shape[:-1] + (-1,))[..., :dim]


_CODE_TABLES: dict = {}


def _code_table(bits: int) -> np.ndarray:
    """float32 [256, 8 // bits]: the codes packed in each byte value, low bits first."""
    if bits not in _CODE_TABLES:
        v = np.arange(256)
        mask = (1 << bits) - 1
        _CODE_TABLES[bits] = np.stack([(v >> (k * bits)) & mask for k in range(8 // bits)], axis=1).astype(np.float32)
    return _CODE_TABLES[bits]


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of unpack_bits (used by the host's quantization pass)."""
    if bits == 8:
        return codes.astype(np.uint8)
    if 8 % bits:
        return _pack_stream(codes, bits)
    per = 8 // bits
    dim = codes.shape[-1]
    pad = (-dim) % per
    if pad:
        codes = np.concatenate([codes, np.zeros(codes.shape[:-1] + (pad,), codes.dtype)], -1)
    c = codes.reshape(codes.shape[:-1] + (-1, per)).astype(np.uint8)
    shifts = np.arange(per, dtype=np.uint8) * bits
    return np.bitwise_or.reduce(c << shifts, axis=-1).astype(np.uint8)


def _pack_stream(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes of any width 1..7 as one little-endian bit stream per row (code j at bits
    j*bits .. j*bits+bits-1): the same layout as the whole-byte packing for 1, 2 and 4 bits,
    and no wasted bits for 3, 5, 6 and 7."""
    stream = np.unpackbits(codes.astype(np.uint8)[..., None], axis=-1, bitorder="little")[..., :bits]
    stream = stream.reshape(codes.shape[:-1] + (-1,))
    return np.packbits(stream, axis=-1, bitorder="little")


def _unpack_stream(packed: np.ndarray, bits: int, dim: int) -> np.ndarray:
    stream = np.unpackbits(packed, axis=-1, bitorder="little")[..., :dim * bits]
    stream = stream.reshape(packed.shape[:-1] + (dim, bits))
    return (stream << np.arange(bits, dtype=np.uint8)).sum(-1, dtype=np.uint8)


def quantize_channels(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``channel_int8`` form of a 2-D weight [O, I]: symmetric int8 codes and one float32
    scale per output row (``w ~ codes * scale[o]``; an all-zero row gets scale 1)."""
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return codes, scale


class Param:
    """One named weight. ``arrays`` maps the kind's member roles to arrays."""

    def __init__(self, name: str, kind: str, arrays: dict[str, np.ndarray], shape, bits: int = 32,
                 act: str | None = None):
        if kind not in KINDS:
            raise BundleError(f"parameter {name!r} has unknown storage kind {kind!r}; "
                              "upgrade edgecompress-runtime")
        missing = [r for r in KINDS[kind] if r not in arrays]
        if missing:
            raise BundleError(f"parameter {name!r} ({kind}) lacks arrays {missing}")
        self.name, self.kind, self.arrays = name, kind, arrays
        self.shape = tuple(int(s) for s in shape)
        self.bits = int(bits)
        self.act = act          # Linear only: None, "dynamic" or "static" int8 activations
        self.remap = arrays.get("remap")
        self.proj = arrays.get("proj")
        self._dense = None
        self._wt = None
        self._table = None    # small quantized tables: dequantized once
        if kind == "rowwise":
            # fp16 scale/bias widened once: R*8 bytes, small next to the codes
            self._scale = arrays["scale"].astype(np.float32)
            self._bias = arrays["bias"].astype(np.float32)
            stored = arrays["codes"].shape[0] * (self.proj.shape[0] if self.proj is not None else self.shape[-1])
            if stored * 4 <= DEQUANT_AT_LOAD_BYTES:
                self._table = self.storage_dense()
        elif kind == "pq":
            # [M*K, D/M] fp32 (small: K*D floats) and the offset of each sub-space's entries
            m, k, sub = arrays["codebooks"].shape
            self._entries = arrays["codebooks"].astype(np.float32).reshape(m * k, sub)
            self._offsets = (np.arange(m, dtype=np.int64) * k)

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def storage_dense(self) -> np.ndarray:
        """The stored array as float32, before remap and projection."""
        if self.kind == "fp32":
            return self.arrays["data"]
        if self.kind == "fp16":
            return self.arrays["data"].astype(np.float32)
        if self.kind == "rowwise":
            return self._dequant_rows(self.arrays["codes"], self._scale, self._bias)
        if self.kind == "pq":
            return self._pq_rows(self.arrays["codes"])
        if self.kind == "clustered":
            return self._declustered()
        if self.kind == "csr":
            a = self.arrays
            out = np.zeros(self.shape, dtype=np.float32)
            rows = np.repeat(np.arange(self.shape[0]), np.diff(a["indptr"]))
            out[rows, a["indices"].astype(np.int64)] = a["data"]
            return out
        return self.arrays["codes"].astype(np.float32) * self.arrays["scale"][:, None]

    def dense(self) -> np.ndarray:
        """The weight as float32 in its logical shape (cached; avoid on large tables)."""
        if self._dense is None:
            w = self.storage_dense()
            if self.remap is not None:
                w = w[self.remap]
            if self.proj is not None:
                w = w @ self.proj
            self._dense = w.reshape(self.shape) if w.size == int(np.prod(self.shape)) else w
        return self._dense

    def matmul_ready(self) -> np.ndarray:
        """W.T as a contiguous float32 [in, out] array, for x @ W.T."""
        if self._wt is None:
            self._wt = np.ascontiguousarray(self.dense().T)
        return self._wt

    def int8_matmul_ready(self) -> np.ndarray:
        """int8 codes as float32 [in, out] (integer-valued): activations x codes
        in fp32 BLAS gives the int32 accumulation exactly."""
        if getattr(self, "_qt", None) is None:
            self._qt = np.ascontiguousarray(self.arrays["codes"].T.astype(np.float32))
        return self._qt

    def _dequant_rows(self, codes, scale, bias):
        dim = self.proj.shape[0] if self.proj is not None else self.shape[-1]
        if self.bits == 8:
            out = codes.astype(np.float32)
        else:
            # one table lookup per packed byte gives its codes as float32, low bits first:
            # 5x faster than unpack_bits' broadcast shifts + astype (same values)
            out = np.take(_code_table(self.bits), codes, axis=0).reshape(codes.shape[:-1] + (-1,))
            if out.shape[-1] != dim:
                out = out[..., :dim]
        out *= scale[..., None]
        out += bias[..., None]
        return out

    def _declustered(self) -> np.ndarray:
        """codes [O, ceil(I*bits/8)] + codebook [G, K] -> the fp32 weight [O, I]."""
        book = self.arrays["codebook"].astype(np.float32)
        codes = unpack_bits(self.arrays["codes"], self.bits, math.prod(self.shape[1:])).astype(np.int64)
        if book.shape[0] == 1:
            return np.take(book[0], codes)
        return np.take_along_axis(book, codes, axis=1)

    def _pq_rows(self, codes):
        """packed codes [N, ceil(M*bits/8)] -> rows [N, M * D/M] through the codebooks."""
        m = len(self._offsets)
        c = unpack_bits(codes, self.bits, m) if self.bits != 8 else codes
        out = np.take(self._entries, c.astype(np.int64) + self._offsets, axis=0)     # [N, M, D/M]
        return out.reshape(codes.shape[0], -1)

    def gather(self, indices: np.ndarray) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.size:
            lo, hi = idx.min(), idx.max()
            if lo < 0 or hi >= self.rows:
                bad = lo if lo < 0 else hi
                raise InputError(f"id {int(bad)} is outside table {self.name!r} "
                                 f"(rows 0..{self.rows - 1})")
        flat = idx.reshape(-1)
        if self.remap is not None:
            flat = np.take(self.remap, flat)
        if self.kind == "fp32":
            rows = np.take(self.arrays["data"], flat, axis=0)
        elif self._table is not None:
            rows = np.take(self._table, flat, axis=0)
        elif self.kind == "fp16":
            rows = np.take(self.arrays["data"], flat, axis=0).astype(np.float32)
        elif self.kind == "rowwise":
            rows = self._dequant_rows(np.take(self.arrays["codes"], flat, axis=0),
                                      np.take(self._scale, flat), np.take(self._bias, flat))
        elif self.kind == "pq":
            rows = self._pq_rows(np.take(self.arrays["codes"], flat, axis=0))
        else:
            rows = np.take(self.storage_dense(), flat, axis=0)
        if self.proj is not None:
            rows = rows @ self.proj
        return rows.reshape(idx.shape + (rows.shape[-1],))
