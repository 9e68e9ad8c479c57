"""The modules handed to the ExecuTorch and LiteRT converters.

Both start from ``ProgramModule`` (edgecompress/graph/torch_exec.py), which is
already the export lowering: tables are ``nn.Embedding``, bags are embedding +
sum (fixed bags) or embedding + segment scatter-add (jagged bags), Linear
weights are ``nn.Linear``. What it cannot carry is the plan's quantized table
storage (it dequantizes), so the two subclasses below put the plan's own codes
back, in the form each runtime executes:

- ``ExecuTorchExportModule``: row-quantized tables become
  ``quantized_decomposed::embedding_byte / embedding_4bit / embedding_2bit``
  calls on the plan's codes with per-row scale and a float zero point chosen
  so that ``(q - zero_point) * scale == code * scale + bias`` (the kernels take
  float zero points). These are the ops torchao's weight-only embedding
  quantization fuses into, so the .pte runs the same kernels, but with exactly
  the plan's values instead of a second quantization.
- ``LiteRTExportModule``: litert-torch refuses uint8 constants, so codes are
  stored as int8 (code - 128) and dequantized in the graph: GATHER of the code
  rows and of (scale, bias), CAST, then MUL/ADD; 4- and 2-bit codes stay packed
  (2 or 4 per byte) and are unpacked with FLOOR arithmetic, which every TFLite
  runtime has (no int4 tensor types needed).

Remapped (pruned) rows and projections (reduced dims) are applied around the
quantized gather exactly as ``ProgramModule._gather`` does.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..graph.program import refs
from ..graph.torch_exec import ProgramModule, _key
from . import pq_tables as pq


_GATHER_OPS = ("embedding", "embedding_bag", "embedding_bag_offsets")


def _used_as_tensor(program) -> set:
    """Params some node reads as a whole tensor (not through a row gather)."""
    return {p for n in program.nodes() for p in refs(n.args[1:] if n.op in _GATHER_OPS else n.args, "p")}


def rowwise_tables(program) -> dict:
    """name -> StoredParam of every row-quantized table that is only ever
    gathered from (a table also read whole stays as ProgramModule has it)."""
    whole = _used_as_tensor(program)
    return {name: p for name, p in program.params.items()
            if program.roles.get(name) == "embedding" and p.kind == "rowwise" and name not in whole}


def fp16_tables(program) -> dict:
    """name -> StoredParam of every fp16 table only ever gathered from (passes/fp16.py)."""
    whole = _used_as_tensor(program)
    return {name: p for name, p in program.params.items()
            if program.roles.get(name) == "embedding" and p.kind == "fp16" and name not in whole}


def _stored_dim(p) -> int:
    """Columns a table stores (a projected table stores fewer than the graph uses)."""
    return int(p.arrays["proj"].shape[0]) if "proj" in p.arrays else int(p.shape[1])


class _QuantTableBase(nn.Module):
    ROW_BYTES = 0            # per-row quantization parameters in this format

    @classmethod
    def supports(cls, p) -> bool:
        """Keep the table quantized only where that is smaller than its fp32 values
        (1-wide tables, e.g. DeepFM / Wide&Deep first-order weights, are not)."""
        codes = -(-_stored_dim(p) * int(p.bits) // 8)
        return codes + cls.ROW_BYTES < 4 * _stored_dim(p)

    def __init__(self, p):
        super().__init__()
        self.bits = int(p.bits)
        self.dim = _stored_dim(p)


class ExecuTorchQuantTable(_QuantTableBase):
    """Row gather through ExecuTorch's quantized embedding kernels."""

    _OP = {8: ("embedding_byte", 0, 255, 0), 4: ("embedding_4bit", -8, 7, 8), 2: ("embedding_2bit", -2, 1, 2)}

    ROW_BYTES = 8            # fp32 scale + fp32 zero point (the kernels take float zero points)

    @staticmethod
    def graph_ops(bits: int) -> int:
        return 1                 # one kernel call, whatever the width

    @classmethod
    def supports(cls, p) -> bool:
        # the kernels' host implementations also need groups of >= 2 columns
        return int(p.bits) in cls._OP and _stored_dim(p) >= 2 and super().supports(p)

    def __init__(self, p):
        super().__init__(p)
        if self.bits not in self._OP:
            raise ValueError(f"no ExecuTorch kernel for {self.bits}-bit rows")
        _, self.qmin, self.qmax, offset = self._OP[self.bits]
        codes = np.ascontiguousarray(p.arrays["codes"])
        scale = p.arrays["scale"].astype(np.float32)
        bias = p.arrays["bias"].astype(np.float32)
        # a constant row has scale 0 and codes 0: scale 1 and zero point -bias give the same row
        safe = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
        zero_point = np.where(scale > 0, -offset - bias / safe, -bias).astype(np.float32)
        if self.bits == 4:
            # ours: column 2k in the low nibble; the kernel reads column 2k from the high nibble
            codes = ((codes & 0x0F) << 4) | (codes >> 4)
        # (2-bit: both layouts put column 4k+j in bits 2j..2j+1)
        self.register_buffer("codes", torch.from_numpy(codes.astype(np.uint8)))
        self.register_buffer("scale", torch.from_numpy(safe))
        self.register_buffer("zero_point", torch.from_numpy(zero_point))
        self.packed_dim = codes.shape[1] * (8 // self.bits)

    def forward(self, idx):
        fn = getattr(torch.ops.quantized_decomposed, self._OP[self.bits][0]).default
        rows = fn(self.codes, self.scale, self.zero_point, self.qmin, self.qmax, idx)
        if self.packed_dim != self.dim:          # odd widths: packing padded the last byte
            rows = rows[..., : self.dim]
        return rows


class LiteRTQuantTable(_QuantTableBase):
    """Row gather of int8-stored codes, dequantized by ordinary TFLite ops."""

    # the plan's fp16 scale and bias, widened to fp32: TFLite gathers no fp16, and an fp16
    # table costs a CAST of the whole table on every invoke (measured: batch 1 13x slower)
    ROW_BYTES = 8

    @staticmethod
    def graph_ops(bits: int) -> int:
        # gather, cast, gather scale/bias, 2 slices, mul, add; narrower codes unpack with 4 ops a part
        return 7 if bits >= 8 else 7 + 1 + 4 * (8 // bits - 1) + 3

    def __init__(self, p):
        super().__init__(p)
        codes = p.arrays["codes"].astype(np.int16) - 128          # uint8 -> int8 storage
        sb = np.stack([p.arrays["scale"], p.arrays["bias"]], axis=1).astype(np.float32)
        if self.bits == 8:
            sb[:, 1] += 128.0 * sb[:, 0]                          # fold the int8 storage offset into the bias
        self.register_buffer("codes", torch.from_numpy(codes.astype(np.int8)))
        self.register_buffer("scale_bias", torch.from_numpy(sb))

    def forward(self, idx):
        c = F.embedding(idx, self.codes).to(torch.float32)
        if self.bits < 8:
            c = c + 128.0                                         # the packed byte, 0..255
            base = float(1 << self.bits)
            parts = []
            for _ in range(8 // self.bits - 1):                   # low bits first, as packed
                high = torch.floor(c / base)
                parts.append(c - high * base)
                c = high
            parts.append(c)
            c = torch.stack(parts, dim=-1).reshape(*c.shape[:-1], -1)
            if c.shape[-1] != self.dim:
                c = c[..., : self.dim]
        sb = F.embedding(idx, self.scale_bias)
        return c * sb[..., 0:1] + sb[..., 1:2]


class _QuantTablesModule(ProgramModule):
    TABLE = None

    def __init__(self, program):
        super().__init__(program)
        self.qtables = nn.ModuleDict()
        self.fp32_tables = []           # quantized in the plan, stored as their exact fp32 values here
        for name, p in rowwise_tables(program).items():
            key = _key(name)
            if not self.TABLE.supports(p):
                self.fp32_tables.append(name)
                continue
            self.qtables[key] = self.TABLE(p)
            del self.tables[key]                  # no fp32 copy in the artifact
        for name, p in pq.pq_tables(program).items():     # product-quantized: same ops in both formats
            self.qtables[_key(name)] = pq.PQTable(p)
            del self.tables[_key(name)]

    def forward(self, *args, **kwargs):
        # app formats carry one output: several heads travel side by side as [B, total width]
        # and the runtime splits them by the widths the manifest records
        out = super().forward(*args, **kwargs)
        if isinstance(out, tuple):
            out = torch.cat([o.reshape(o.shape[0], -1).to(torch.float32) for o in out], dim=1)
        return out

    def _gather(self, pname: str, idx):
        key = _key(pname)
        if key not in self.qtables:
            return super()._gather(pname, idx)
        if pname in self.remaps:
            idx = getattr(self, self.remaps[pname])[idx].long()
        rows = self.qtables[key](idx)
        if key in self.projections:
            rows = rows @ self.projections[key]
        return rows


class ExecuTorchExportModule(_QuantTablesModule):
    """fp16 tables stay fp16 in the .pte: the portable embedding kernel gathers fp16 rows and a
    cast widens only those (measured exact; LiteRT has no fp16 GATHER, so it keeps them fp32)."""
    TABLE = ExecuTorchQuantTable

    def __init__(self, program):
        super().__init__(program)
        self.half_tables = set()
        for name, p in fp16_tables(program).items():
            key = _key(name)
            self.register_buffer(f"half__{key}", torch.from_numpy(np.ascontiguousarray(p.arrays["data"])))
            self.half_tables.add(key)
            del self.tables[key]

    def _gather(self, pname: str, idx):
        key = _key(pname)
        if key not in self.half_tables:
            return super()._gather(pname, idx)
        if pname in self.remaps:
            idx = getattr(self, self.remaps[pname])[idx].long()
        rows = F.embedding(idx, getattr(self, f"half__{key}")).to(torch.float32)
        if key in self.projections:
            rows = rows @ self.projections[key]
        return rows


class LiteRTExportModule(_QuantTablesModule):
    TABLE = LiteRTQuantTable


def fp32_tables_note(names) -> str:
    return (f"tables {', '.join(names)} are stored as their dequantized fp32 values (exact): narrower than "
            "a code plus this format's per-row scale and bias, or too narrow for its quantized kernels")


def example_args(program, inputs: dict, rows: int | None = None) -> tuple:
    """Inputs as torch tensors in ``program.graph["inputs"]`` order."""
    out = []
    for name in program.graph["inputs"]:
        a = np.asarray(inputs[name])
        a = a[:rows] if rows is not None else a
        a = a.astype(np.int64) if a.dtype.kind in "iu" else a.astype(np.float32)
        out.append(torch.from_numpy(np.ascontiguousarray(a)))
    return tuple(out)


_TABLE_CLASS = {"executorch": ExecuTorchQuantTable, "litert": LiteRTQuantTable}
# per output channel of an int8 Linear the converters store a scale (fp32) and a zero point (int64)
_CHANNEL_QPARAM_BYTES = 12


def stored_tensor_bytes(program, fmt: str) -> int:
    """Bytes of the tensors the ``fmt`` artifact of ``program`` stores: the tables as the
    export module above holds them, Linear weights the plan quantized as int8 per
    channel (the converters quantize them), every other parameter, remap, projection
    and constant as its torch tensor. The size model adds the format's graph overhead."""
    table = _TABLE_CLASS[fmt]
    quant_tables, qlin = rowwise_tables(program), set(program.quantized_linears())
    half = fp16_tables(program) if fmt == "executorch" else {}
    pq_names = pq.pq_tables(program)
    total = 0
    for name, p in program.params.items():
        a = p.arrays
        if name in pq_names:
            total += pq.stored_bytes(p)
        elif name in quant_tables and table.supports(p):
            total += a["codes"].nbytes + a["codes"].shape[0] * table.ROW_BYTES
        elif name in half:
            total += a["data"].nbytes
        elif program.roles.get(name) == "embedding":
            rows = next(iter(v.shape[0] for k, v in a.items() if k in ("codes", "data")))
            total += rows * _stored_dim(p) * 4
        elif name in qlin:
            total += int(np.prod(p.shape)) + p.shape[0] * _CHANNEL_QPARAM_BYTES
        else:
            total += int(np.prod(p.shape)) * 4
        total += a["remap"].nbytes if "remap" in a else 0
        total += a["proj"].size * 4 if "proj" in a else 0
    return total + sum(np.asarray(v).nbytes for v in program.constants.values())


def graph_units(program, fmt: str) -> int:
    """A proxy for the size of the ``fmt`` artifact's graph: the program's nodes plus what the
    export module adds per table (dequantizing ops, remap lookups, projections)."""
    table, quant = _TABLE_CLASS[fmt], rowwise_tables(program)
    half = fp16_tables(program) if fmt == "executorch" else {}
    pq_names = pq.pq_tables(program)
    units = len(program.graph["nodes"])
    for name, p in program.params.items():
        if name in quant and table.supports(p):
            units += table.graph_ops(int(p.bits))
        units += name in half             # the cast of the gathered fp16 rows
        units += pq.PQTable.graph_ops(int(p.bits)) if name in pq_names else 0
        units += 2 * ("remap" in p.arrays) + ("proj" in p.arrays)
    return units
