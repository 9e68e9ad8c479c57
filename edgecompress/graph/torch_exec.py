"""ProgramModule: a Program (our graph + weights) executed with torch ops.

Three uses, one implementation:
- the host reference for a compressed bundle (an independent implementation of
  the op set, checked against the numpy runtime);
- the trainable student for distillation after structural passes (the original
  nn.Module no longer matches the pruned shapes);
- the module handed to the ExecuTorch / LiteRT exporters. Tables become
  ``nn.Embedding`` and bags become embedding + sum (or + segment scatter-add
  for jagged bags), the form both toolchains run; Linear weights become
  ``nn.Linear`` so torchao / pt2e quantizers find them.

Quantized parameters are dequantized to what the device computes with; pruned
rows go through their remap, reduced dims through their projection.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .program import IDS_ARG, TABLE_ARG, WEIGHT_ARG, StoredParam, ref_name


def _key(name: str) -> str:
    return name.replace(".", "__")


class ProgramModule(nn.Module):
    def __init__(self, program, trainable: bool = False):
        super().__init__()
        self.graph = program.graph
        self.nodes = program.nodes()          # typed views, built once: forward() walks them every call
        self.input_names = list(program.graph["inputs"])
        self.tables = nn.ModuleDict()
        self.linears = nn.ModuleDict()
        self.others = nn.ParameterDict()
        self.remaps = {}
        self.act_quant = {}
        self.projections = nn.ParameterDict()
        linear_bias = self.linear_bias = program.linear_bias()
        for name, p in program.params.items():
            rt = p.to_runtime(name)
            dense = torch.from_numpy(np.ascontiguousarray(rt.storage_dense())).float()
            role = program.roles.get(name)
            if role == "embedding":
                emb = nn.Embedding(dense.shape[0], dense.shape[1])
                emb.weight.data.copy_(dense)
                self.tables[_key(name)] = emb
                if rt.remap is not None:
                    # stored as the bundle stores it (int16 / int32): in app artifacts the remap of a
                    # pruned table is often bigger than its kept rows; gathered ids are widened after
                    self.register_buffer(f"remap__{_key(name)}", torch.from_numpy(np.ascontiguousarray(rt.remap)))
                    self.remaps[name] = f"remap__{_key(name)}"
                if rt.proj is not None:
                    self.projections[_key(name)] = nn.Parameter(torch.from_numpy(rt.proj.astype(np.float32)))
            elif role == "linear" and name in linear_bias:
                out_f, in_f = dense.shape
                lin = nn.Linear(in_f, out_f, bias=linear_bias[name] is not None)
                lin.weight.data.copy_(dense)
                if linear_bias[name] is not None:
                    lin.bias.data.copy_(torch.from_numpy(
                        program.params[linear_bias[name]].to_runtime(linear_bias[name]).dense()).float())
                self.linears[_key(name)] = lin
                if p.act:   # int8 activations: simulated so the host reference matches the device
                    scale = rt.arrays.get("act_scale")
                    self.act_quant[_key(name)] = (p.act, None if scale is None else float(scale.reshape(-1)[0]))
            else:   # in its logical shape (a conv kernel stored int8 as [out, in*k] included)
                self.others[_key(name)] = nn.Parameter(dense.reshape(p.shape), requires_grad=trainable)
        self.constants = {k: torch.from_numpy(np.asarray(v)) for k, v in program.constants.items()}
        for k, v in self.constants.items():
            self.register_buffer(f"const__{k}", v, persistent=False)
        self.requires_grad_(trainable)

    # --- weights back to the program (after distillation) ------------------
    def state_to_program(self, program) -> None:
        """Write trained float weights back into an fp32 program."""
        for name, p in program.params.items():
            key = _key(name)
            arrays = dict(p.arrays)
            if key in self.tables:
                arrays["data"] = self.tables[key].weight.detach().numpy().copy()
                if key in self.projections:
                    arrays["proj"] = self.projections[key].detach().numpy().copy()
            elif key in self.linears:
                arrays["data"] = self.linears[key].weight.detach().numpy().copy()
            elif key in self.others:
                arrays["data"] = self.others[key].detach().numpy().reshape(p.shape).copy()
            else:
                continue
            program.params[name] = StoredParam(p.kind, arrays, p.shape, p.bits, p.info)
        for w, bname in self.linear_bias.items():
            lin = self.linears[_key(w)] if _key(w) in self.linears else None
            if lin is not None and lin.bias is not None and bname is not None:
                b = program.params[bname]
                program.params[bname] = StoredParam(b.kind, {**b.arrays, "data": lin.bias.detach().numpy().copy()},
                                                    b.shape, b.bits, b.info)

    # --- execution -----------------------------------------------------------
    def _gather(self, pname: str, idx):
        key = _key(pname)
        if pname in self.remaps:
            idx = getattr(self, self.remaps[pname])[idx].long()
        rows = self.tables[key](idx)
        if key in self.projections:
            rows = rows @ self.projections[key]
        return rows

    def _value(self, a, env):
        if isinstance(a, dict):
            if "v" in a:
                return env[a["v"]]
            if "c" in a:
                if a["c"].startswith("const_nonfinite_"):     # a literal (-inf mask value), not a tensor
                    return float(self.constants[a["c"]])
                return getattr(self, f"const__{a['c']}")
            if "p" in a:
                return ("param", a["p"])
        if isinstance(a, list):
            return [self._value(x, env) for x in a]
        return a

    def _param_tensor(self, ref):
        key = _key(ref[1])
        if key in self.others:
            return self.others[key]
        if key in self.linears:
            return self.linears[key].weight
        return self.tables[key].weight

    def forward(self, *args, **kwargs):
        env = dict(zip(self.input_names, args))
        env.update(kwargs)
        for n in self.nodes:
            op = n.op
            if op == "linear" and n.param(WEIGHT_ARG) is not None:
                x = env[n.value(0)]
                key = _key(n.param(WEIGHT_ARG))
                if key in self.act_quant:
                    x = _fake_quant_activations(x, *self.act_quant[key])
                env[n.out] = self.linears[key](x)
                continue
            if op in ("embedding", "embedding_bag", "embedding_bag_offsets"):
                env[n.out] = self._embedding(op, n.args, env)
                continue
            vals = [self._value(a, env) for a in n.args]
            vals = [self._param_tensor(v) if isinstance(v, tuple) and v and v[0] == "param" else v for v in vals]
            env[n.out] = _TORCH_OPS[op](*vals) if op in _TORCH_OPS else _aten_call(op, vals)
        outs = [env[o] for o in self.graph["outputs"]]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _embedding(self, op, raw, env):
        pname = ref_name(raw[TABLE_ARG], "p")
        idx = self._value(raw[IDS_ARG], env)
        if op == "embedding":
            return self._gather(pname, idx)
        if op == "embedding_bag":
            mode, pad = raw[2], raw[3]
            rows = self._gather(pname, idx)                       # [B, L, D]
            if len(raw) > 4 and raw[4] is not None:               # per_sample_weights, sum mode
                w = self._value(raw[4], env).to(rows.dtype)
                if pad is not None:
                    w = w * (idx != pad).to(rows.dtype)
                return (rows * w.unsqueeze(-1)).sum(1)
            if pad is not None:
                keep = (idx != pad).to(rows.dtype).unsqueeze(-1)
                rows = rows * keep
                if mode == 1:
                    return rows.sum(1) / keep.sum(1).clamp_min(1)
            return rows.sum(1) if mode == 0 else rows.mean(1) if mode == 1 else rows.amax(1)
        # jagged bags: segment ids from offsets, then scatter-add
        offsets = self._value(raw[2], env)
        mode, pad, last = raw[3], raw[4], raw[5]
        if last:
            offsets = offsets[:-1]
        rows = self._gather(pname, idx)
        if pad is not None:
            rows = rows * (idx != pad).to(rows.dtype).unsqueeze(-1)
        n = idx.shape[0]
        marks = torch.zeros(n, dtype=torch.int64).index_put_((offsets[1:],), torch.ones_like(offsets[1:]),
                                                              accumulate=True)
        seg = torch.cumsum(marks, 0)
        out = torch.zeros(offsets.shape[0], rows.shape[1], dtype=rows.dtype)
        out = out.index_add(0, seg, rows)
        if mode == 1:
            counts = torch.zeros(offsets.shape[0], dtype=rows.dtype).index_add(0, seg, torch.ones(n, dtype=rows.dtype))
            out = out / counts.clamp_min(1).unsqueeze(-1)
        return out


def _fake_quant_activations(x, mode, scale):
    """Symmetric int8 rounding of activations, as ops.linear does on the device."""
    if mode == "static":
        s = torch.tensor(scale, dtype=x.dtype)
    else:
        amax = x.detach().abs().amax(dim=-1, keepdim=True)
        s = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    return torch.clamp(torch.round(x / s), -127, 127) * s


def _aten_call(name: str, values: list):
    """A Core ATen node run by torch itself: the reference semantics of the op."""
    from .aten import from_json_value, overload, split_args
    target = overload(name)
    values = [from_json_value(v, a) for a, v in zip(target._schema.arguments, values)]
    pos, kw = split_args(target, values)
    return target(*pos, **kw)


def _dtype(name):
    return getattr(torch, name) if isinstance(name, str) else name


def _squeeze(x, dims=None):
    if dims is None:
        return x.squeeze()
    for d in sorted([dims] if isinstance(dims, int) else dims, key=lambda d: d % x.dim(), reverse=True):
        x = x.squeeze(d)
    return x


def _vector_norm(x, ord=2.0, dims=None, keepdim=False):
    return torch.linalg.vector_norm(x, ord, dim=dims, keepdim=keepdim)


def _flatten(x, start=0, end=-1):
    return torch.flatten(x, start, end)


def _index(x, indices):
    return x[tuple(slice(None) if i is None else i for i in indices)]


def _slice(x, dim=0, start=None, end=None, step=1):
    idx = [slice(None)] * x.dim()
    idx[dim] = slice(start, end, step)
    return x[tuple(idx)]


_TORCH_OPS = {
    "add": lambda a, b, alpha=1: a + b * alpha if alpha != 1 else a + b,
    "sub": lambda a, b, alpha=1: a - b * alpha if alpha != 1 else a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b, rounding_mode=None: torch.div(a, b, rounding_mode=rounding_mode)
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor) else
    (a // b if rounding_mode == "floor" else a / b),
    "floordiv": lambda a, b: a // b,
    "neg": lambda x: -x,
    "pow": lambda x, e: x ** e,
    "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "exp": torch.exp, "log": torch.log,
    "sqrt": torch.sqrt, "rsqrt": torch.rsqrt,
    "clamp": lambda x, min=None, max=None: torch.clamp(x, min, max),
    "clamp_min": lambda x, v: torch.clamp_min(x, v),
    "identity": lambda x, *unused: x,
    "sum": lambda x, dims=None, keepdim=False: x.sum() if dims is None else x.sum(dims, keepdim=keepdim),
    "mean": lambda x, dims=None, keepdim=False: x.mean() if dims is None else x.mean(dims, keepdim=keepdim),
    "amax": lambda x, dims=None, keepdim=False: x.amax(dims if dims is not None else list(range(x.dim())), keepdim),
    "vector_norm": _vector_norm,
    "softmax": lambda x, dim, half_to_float=False: torch.softmax(x, dim),
    "matmul": torch.matmul, "bmm": torch.bmm,
    "size": lambda x, d: x.shape[d],
    "numel": lambda x: x.numel(),
    "reshape": lambda x, shape: torch.reshape(x, [int(s) if not isinstance(s, torch.SymInt) else s for s in shape]),
    "flatten": _flatten,
    "squeeze": _squeeze,
    "unsqueeze": torch.unsqueeze,
    "transpose": torch.transpose,
    "permute": lambda x, dims: x.permute(*dims),
    "expand": lambda x, shape: x.expand(*shape),
    "expand_as": lambda x, o: x.expand_as(o),
    "cat": lambda ts, dim=0: torch.cat(ts, dim),
    "stack": lambda ts, dim=0: torch.stack(ts, dim),
    "unbind": lambda x, dim=0: torch.unbind(x, dim),
    "getitem": lambda seq, i: seq[i],
    "slice": _slice,
    "select": lambda x, dim, i: x.select(dim, i),
    "index": _index,
    "arange": lambda start, end=None, step=1, dtype="int64": torch.arange(start, end, step, dtype=_dtype(dtype))
    if end is not None else torch.arange(start, dtype=_dtype(dtype)),
    "to": lambda x, dtype: x.to(_dtype(dtype)),
}
