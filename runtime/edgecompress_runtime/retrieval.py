"""Ranking: one call over every item for retrieval bundles, the repeated query for pairwise ones.

A retrieval bundle (``edgecompress.compile(..., towers=...)``) computes ``scores [B, num_items]`` =
user tower, then one matrix product with the stored item-embedding matrix (a Linear weight, row-wise
int8 when the plan quantized it). Its manifest says so in a small section::

    "retrieval": {"kind": "two_tower", "user_inputs": ["user_id"], "item_input": "item_id",
                  "num_items": 1682, "dim": 32, "item_matrix": "items.weight",
                  "score": "dot", "link": "identity" | "sigmoid" | "monotone"}

``score`` is the raw dot product the bundle returns; ``link`` maps it to the source model's pairwise
output (any link keeps the order, so rankings are the pairwise model's).
"""
from __future__ import annotations

import numpy as np

from .errors import BundleError, InputError

LINKS = ("identity", "sigmoid", "monotone")


def section(manifest: dict) -> dict | None:
    """The manifest's retrieval section, checked (None for a pairwise bundle)."""
    r = manifest.get("retrieval")
    if r is None:
        return None
    where = "manifest.retrieval"
    if not isinstance(r, dict) or r.get("kind") != "two_tower":
        raise BundleError(f"{where}: unknown kind {str(r.get('kind') if isinstance(r, dict) else r)[:40]!r}; "
                          "upgrade edgecompress-runtime")
    names = {s["name"] for s in manifest.get("inputs", [])}
    users = r.get("user_inputs")
    if not isinstance(users, list) or not users or not all(isinstance(u, str) and u in names for u in users):
        raise BundleError(f"{where}.user_inputs must list the bundle's inputs, got {str(users)[:80]}")
    for key in ("num_items", "dim"):
        v = r.get(key)
        if type(v) is not int or not 0 < v <= 1 << 30:
            raise BundleError(f"{where}.{key} must be a positive integer, got {str(v)[:40]!r}")
    if not isinstance(r.get("item_input"), str) or r.get("score") != "dot" or r.get("link") not in LINKS:
        raise BundleError(f"{where}: item_input must be a name, score 'dot', link one of {LINKS}")
    if r.get("item_matrix") not in (manifest.get("params") or {}):
        raise BundleError(f"{where}.item_matrix names no stored parameter: {str(r.get('item_matrix'))[:60]!r}")
    return r


def check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise InputError(f"topk() needs k as a positive integer, got {str(k)[:40]!r}")
    return int(k)


def item_ids(values, n_items: int, what: str) -> np.ndarray:
    """1-D int64 item ids, each in 0..n_items-1."""
    a = np.asarray(values)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        raise InputError(f"topk() {what} must be a 1-D array of integer item ids, got shape {a.shape} "
                         f"dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= n_items):
        bad = int(a.min()) if a.min() < 0 else int(a.max())
        raise InputError(f"topk() {what} holds item id {bad}, outside 0..{n_items - 1}")
    return a


def rank(scores: np.ndarray, k: int, exclude=None):
    """Best-first (positions, scores) per row of ``scores`` [B, N]; ``exclude`` per row (list of
    position arrays) or shared (one array) is dropped; rows keep min(k, N) entries, ties in position order."""
    scores = np.asarray(scores, dtype=np.float32)
    if exclude is not None:
        scores = scores.copy()
        rows = exclude if _per_row(exclude, len(scores)) else [exclude] * len(scores)
        for r, ex in enumerate(rows):
            ex = item_ids(ex, scores.shape[1], "exclude")
            scores[r, ex] = -np.inf
    n = scores.shape[1]
    k = min(k, n)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < n else np.broadcast_to(np.arange(n), scores.shape)
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.lexsort((top, -top_scores), axis=1)        # best first, ties by position
    top = np.take_along_axis(top, order, axis=1)
    return top, np.take_along_axis(scores, top, axis=1)


def _per_row(exclude, rows: int) -> bool:
    """Is ``exclude`` one id list per query row (a list of arrays) rather than one shared list?"""
    if isinstance(exclude, np.ndarray):
        return exclude.dtype == object
    return (isinstance(exclude, (list, tuple)) and len(exclude) == rows and len(exclude) > 0
            and all(isinstance(e, (list, tuple, np.ndarray)) for e in exclude))


def retrieval_topk(model, spec: dict, inputs: dict, candidates, k: int, exclude):
    """One model run for every query row: scores [B, num_items] -> top-k over all items or ``candidates``.
    Returns (positions into candidates (= item ids without candidates), scores): [k] for one query row,
    [B, k] for B rows."""
    if not isinstance(inputs, dict):
        raise InputError("topk() takes the user inputs as a dict, e.g. {'user_id': np.array([7])}")
    extra = sorted(set(inputs) - set(spec["user_inputs"]))
    if extra:
        raise InputError(f"topk() on a retrieval bundle takes only the user inputs {spec['user_inputs']}; got "
                         f"{extra[0]!r} (rank a subset of items with candidates={{'{spec['item_input']}': ids}})")
    n_items = spec["num_items"]
    if isinstance(candidates, dict):
        if set(candidates) != {spec["item_input"]}:
            raise InputError(f"topk() candidates on a retrieval bundle are item ids: "
                             f"{{'{spec['item_input']}': ids}} or an array, got inputs {sorted(candidates)}")
        candidates = candidates[spec["item_input"]]
    scores = np.asarray(model.predict(inputs), dtype=np.float32)
    scores = scores.reshape(-1, n_items)
    if scores.shape[0] == 0:
        raise InputError("topk() needs at least one query row")
    if candidates is not None:
        cand = item_ids(candidates, n_items, "candidates")
        if cand.size == 0:
            raise InputError("topk() candidates is empty")
        scores = scores[:, cand]
    top, top_scores = rank(scores, k, exclude)
    if scores.shape[0] == 1:
        return top[0], top_scores[0]
    return top, top_scores
