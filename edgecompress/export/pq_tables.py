"""Product-quantized tables (passes/product_quant.py) in the ExecuTorch and LiteRT modules.

Both formats run the same ordinary ops: GATHER of the ids' code bytes (stored int8 as
code - 128: litert-torch refuses uint8 constants), CAST to float and + 128, 4-bit codes
unpacked with FLOOR arithmetic (two per byte, low bits first, as the bundle packs them),
+ the offset of each sub-space's entries, CAST to int, GATHER of the fp32 codebook entries
[M*K, d/M] and a reshape to [..., d]. The values are the plan's codes and (fp16-rounded)
entries, so the artifact computes exactly what the numpy runtime does."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..graph.program import refs

_GATHER_OPS = ("embedding", "embedding_bag", "embedding_bag_offsets")


def pq_tables(program) -> dict:
    """name -> StoredParam of every product-quantized table only ever gathered from."""
    whole = {p for n in program.nodes() for p in refs(n.args[1:] if n.op in _GATHER_OPS else n.args, "p")}
    return {name: p for name, p in program.params.items()
            if program.roles.get(name) == "embedding" and p.kind == "pq" and name not in whole}


def stored_bytes(p) -> int:
    """Bytes the artifact stores for one PQ table: int8 codes + fp32 codebook entries."""
    return int(p.arrays["codes"].nbytes + p.arrays["codebooks"].size * 4)


class PQTable(nn.Module):
    @staticmethod
    def graph_ops(bits: int) -> int:
        # gather, cast, add, [4-bit: 2 x (div, floor, mul, sub) + stack + slice], add offsets, cast,
        # gather, reshape
        return 7 + (10 if bits == 4 else 0)

    def __init__(self, p):
        super().__init__()
        cb = p.arrays["codebooks"]
        self.m, self.k, _ = (int(s) for s in cb.shape)
        self.bits = int(p.bits)
        codes = p.arrays["codes"].astype(np.int16) - 128
        self.register_buffer("codes", torch.from_numpy(codes.astype(np.int8)))
        self.register_buffer("entries", torch.from_numpy(cb.astype(np.float32).reshape(self.m * self.k, -1)))
        self.register_buffer("offsets", torch.arange(self.m, dtype=torch.float32) * float(self.k))

    def forward(self, idx):
        c = F.embedding(idx, self.codes).to(torch.float32) + 128.0
        if self.bits == 4:
            high = torch.floor(c / 16.0)
            c = torch.stack([c - high * 16.0, high], dim=-1).flatten(-2)
            if c.shape[-1] != self.m:
                c = c[..., : self.m]
        flat = (c + self.offsets).to(torch.int64)
        return F.embedding(flat, self.entries).flatten(-2)
