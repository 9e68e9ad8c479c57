"""Exact rewrites at lowering: eval-mode BatchNorm after a Linear folds into it.

Many libraries put ``BatchNorm1d`` after every Linear of their MLPs. In eval mode
it is an affine map per output channel, so the pair is one Linear with
W' = W * s and b' = (b - mean) * s + beta, s = gamma / sqrt(var + eps). The
passes then see (and quantize, prune) one Linear, and the device runs one op.
"""
from __future__ import annotations

import numpy as np

BATCH_NORM = "_native_batch_norm_legit_no_training.default"


def _uses(nodes) -> dict:
    uses: dict[str, int] = {}

    def walk(a):
        if isinstance(a, dict) and "v" in a:
            uses[a["v"]] = uses.get(a["v"], 0) + 1
        elif isinstance(a, dict) and "p" in a:
            uses["p:" + a["p"]] = uses.get("p:" + a["p"], 0) + 1
        elif isinstance(a, list):
            for x in a:
                walk(x)
    for n in nodes:
        walk(n["args"])
    return uses


def fold_batchnorm(nodes: list, params: dict, constants: dict, roles: dict, ndim: dict, outputs: set) -> list:
    """Nodes with every foldable Linear -> BatchNorm -> getitem(0) chain made one Linear.
    Foldable: the Linear's output is 2-D (channels on dim 1), read only by the BatchNorm,
    and its weight and bias are used nowhere else. ``params`` is updated in place."""
    from .lower import StoredParam
    uses = _uses(nodes)
    by_out = {n["out"]: n for n in nodes}
    drop, rename = set(), {}
    for n in nodes:
        if n["op"] != BATCH_NORM:
            continue
        src = n["args"][0]
        lin = by_out.get(src.get("v")) if isinstance(src, dict) else None
        if lin is None or lin["op"] != "linear" or ndim.get(lin["out"]) != 2 or uses.get(lin["out"]) != 1 \
                or lin["out"] in outputs:
            continue
        w_ref, b_ref = lin["args"][1], lin["args"][2]
        if not (isinstance(w_ref, dict) and "p" in w_ref and uses.get("p:" + w_ref["p"]) == 1):
            continue
        if b_ref is not None and not (isinstance(b_ref, dict) and "p" in b_ref and uses.get("p:" + b_ref["p"]) == 1):
            continue
        getters = [m for m in nodes if m["op"] == "getitem" and m["args"][0] == {"v": n["out"]}]
        if len(getters) != 1 or getters[0]["args"][1] != 0 or uses.get(n["out"]) != 1:
            continue
        gamma, beta, mean, var, _momentum, eps = n["args"][1:7]
        values = [_array(a, params, constants) for a in (gamma, beta, mean, var)]
        if any(v is False for v in values[2:]) or values[2] is None or values[3] is None:
            continue
        g, bt, mu, vr = values
        w = params[w_ref["p"]].arrays["data"].astype(np.float64)
        b = params[b_ref["p"]].arrays["data"].astype(np.float64) if b_ref is not None else np.zeros(w.shape[0])
        s = (g if g is not None else 1.0) / np.sqrt(vr + float(eps))
        new_w = (w * s[:, None]).astype(np.float32)
        new_b = ((b - mu) * s + (bt if bt is not None else 0.0)).astype(np.float32)
        params[w_ref["p"]] = StoredParam("fp32", {"data": new_w}, tuple(new_w.shape),
                                         info={"folded_batchnorm": n["out"]})
        b_name = b_ref["p"] if b_ref is not None else w_ref["p"] + ".folded_bias"
        params[b_name] = StoredParam("fp32", {"data": new_b}, tuple(new_b.shape))
        roles[b_name] = "bias"
        lin["args"][2] = {"p": b_name}
        drop.update((n["out"], getters[0]["out"]))
        rename[lin["out"]] = getters[0]["out"]
    for n in nodes:
        if n["out"] in rename:
            n["out"] = rename[n["out"]]
    return [n for n in nodes if n["out"] not in drop or n["op"] == "linear"]


def _array(a, params, constants):
    """A BatchNorm argument's values (float64), None when absent, False when computed at run time."""
    if a is None:
        return None
    if isinstance(a, dict) and "p" in a:
        return params[a["p"]].arrays["data"].astype(np.float64)
    if isinstance(a, dict) and "c" in a:
        return np.asarray(constants[a["c"]], dtype=np.float64)
    return False
