"""Exact rewrites at lowering: eval-mode BatchNorm after a Linear folds into it.

Many libraries put ``BatchNorm1d`` after every Linear of their MLPs. In eval mode
it is an affine map per output channel, so the pair is one Linear with
W' = W * s and b' = (b - mean) * s + beta, s = gamma / sqrt(var + eps). The
passes then see (and quantize, prune) one Linear, and the device runs one op.
"""
from __future__ import annotations

import numpy as np

from .program import BIAS_ARG, WEIGHT_ARG, Node, StoredParam, ref_name

BATCH_NORM = "_native_batch_norm_legit_no_training.default"


def _uses(nodes) -> dict:
    """How many times each value ("v") and each param ("p:" + name) is read."""
    uses: dict[str, int] = {}
    for n in map(Node, nodes):
        for key in n.inputs + ["p:" + p for p in n.params]:
            uses[key] = uses.get(key, 0) + 1
    return uses


def fold_batchnorm(nodes: list, params: dict, constants: dict, roles: dict, ndim: dict, outputs: set) -> list:
    """Nodes with every foldable Linear -> BatchNorm -> getitem(0) chain made one Linear.
    Foldable: the Linear's output is 2-D (channels on dim 1), read only by the BatchNorm,
    and its weight and bias are used nowhere else. ``params`` is updated in place."""
    uses = _uses(nodes)
    by_out = {n["out"]: Node(n) for n in nodes}
    drop, rename = set(), {}
    for raw in nodes:
        n = Node(raw)
        if n.op != BATCH_NORM:
            continue
        lin = by_out.get(n.value(0))
        if lin is None or lin.op != "linear" or ndim.get(lin.out) != 2 or uses.get(lin.out) != 1 \
                or lin.out in outputs:
            continue
        w_name, b_name = lin.param(WEIGHT_ARG), lin.param(BIAS_ARG)
        if w_name is None or uses.get("p:" + w_name) != 1:
            continue
        if lin.arg(BIAS_ARG) is not None and (b_name is None or uses.get("p:" + b_name) != 1):
            continue
        getters = [m for m in map(Node, nodes) if m.op == "getitem" and m.reads(n.out)]
        if len(getters) != 1 or getters[0].arg(1) != 0 or uses.get(n.out) != 1:
            continue
        gamma, beta, mean, var, _momentum, eps = n.args[1:7]
        values = [_array(a, params, constants) for a in (gamma, beta, mean, var)]
        if any(v is False for v in values[2:]) or values[2] is None or values[3] is None:
            continue
        g, bt, mu, vr = values
        w = params[w_name].arrays["data"].astype(np.float64)
        b = params[b_name].arrays["data"].astype(np.float64) if b_name is not None else np.zeros(w.shape[0])
        s = (g if g is not None else 1.0) / np.sqrt(vr + float(eps))
        new_w = (w * s[:, None]).astype(np.float32)
        new_b = ((b - mu) * s + (bt if bt is not None else 0.0)).astype(np.float32)
        params[w_name] = StoredParam("fp32", {"data": new_w}, tuple(new_w.shape),
                                     info={"folded_batchnorm": n.out})
        b_name = b_name if b_name is not None else w_name + ".folded_bias"
        params[b_name] = StoredParam("fp32", {"data": new_b}, tuple(new_b.shape))
        roles[b_name] = "bias"
        lin.set_param(BIAS_ARG, b_name)
        drop.update((n.out, getters[0].out))
        rename[lin.out] = getters[0].out
    for n in nodes:
        if n["out"] in rename:
            n["out"] = rename[n["out"]]
    return [n for n in nodes if n["out"] not in drop or n["op"] == "linear"]


def _array(a, params, constants):
    """A BatchNorm argument's values (float64), None when absent, False when computed at run time."""
    if a is None:
        return None
    if ref_name(a, "p") is not None:
        return params[ref_name(a, "p")].arrays["data"].astype(np.float64)
    if isinstance(a, dict) and "c" in a:
        return np.asarray(constants[a["c"]], dtype=np.float64)
    return False
