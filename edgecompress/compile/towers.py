"""Retrieval compiles: a model whose score is a dot product of a user tower and an item tower
becomes a user tower plus a precomputed item-embedding matrix.

``compile(..., towers=...)`` marks the towers: ``"auto"`` (the zoo's TwoTower: ``user_embedding`` /
``item_embedding``), a pair of method names or callables, or a :class:`Towers`. The claim is checked on
sample rows: the model's pairwise output must be the dot product of the two towers, or a monotone
function of it (DSSM's sigmoid(cosine) of L2-normalised towers), else the compile is refused.

What gets compiled is :class:`RetrievalModule`: ``user inputs -> scores [B, num_items]`` = the user tower
followed by one Linear whose weight is the item matrix [num_items, d]. The passes and the planner treat
that Linear like any other (``linear_int8_weights`` stores it row-wise int8 with one scale per item), so
the bundle's exact size and the budgets count it, and the app formats carry it. The manifest's
``retrieval`` section (``retrieval_section``) tells the runtime to rank with it (runtime/retrieval.py).
Metrics stay the pairwise ones: ``pairwise_fn`` reads a [B, num_items] scorer as a pairwise predict_fn.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import DataError, ModelError

CLAIM_ROWS = 256            # sampled (user, item) rows the dot-product claim is checked on
LINKS = ("identity", "sigmoid", "monotone")


@dataclass(frozen=True)
class Towers:
    """Which parts of a model are its towers. ``user`` / ``item``: method names of the model or
    callables ``fn(model, inputs)``; ``call``: "named" (``tower(user_id=...)``) or "dict"
    (``tower({"user_id": ...})``); ``user_inputs``: the inputs of the user side;
    ``item_input``: the item id input; ``items``: item feature rows [num_items] per item-side
    input for item towers that read more than the id (default: ids 0..num_items-1)."""
    user: str | Callable = "user_embedding"
    item: str | Callable = "item_embedding"
    user_inputs: tuple = ("user_id",)
    item_input: str = "item_id"
    call: str = "named"
    num_items: int | None = None
    items: dict | None = None

    def __post_init__(self):
        for side in ("user", "item"):
            v = getattr(self, side)
            if not (callable(v) or (isinstance(v, str) and v.isidentifier())):
                raise ModelError(f"towers: {side} must be a method name or a callable, got {v!r}")
        if self.call not in ("named", "dict"):
            raise ModelError(f"towers: call must be 'named' or 'dict', got {self.call!r}")
        names = tuple(self.user_inputs)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ModelError(f"towers: user_inputs must name at least one input, got {self.user_inputs!r}")
        object.__setattr__(self, "user_inputs", names)
        if self.item_input in names:
            raise ModelError(f"towers: {self.item_input!r} cannot be both a user input and the item input")
        if self.num_items is not None and (type(self.num_items) is not int or self.num_items < 1):
            raise ModelError(f"towers: num_items must be a positive integer, got {self.num_items!r}")

    def side(self, model, which: str, inputs: dict) -> torch.Tensor:
        fn = getattr(self, which)
        if isinstance(fn, str):
            if not callable(getattr(model, fn, None)):
                raise ModelError(f"towers: the model has no method {fn!r} ({type(model).__name__})")
            fn = getattr(model, fn)
            return fn(**inputs) if self.call == "named" else fn(inputs)
        return fn(model, inputs)


def resolve(model, towers) -> Towers:
    """``towers`` as compile() takes it -> a Towers."""
    if isinstance(towers, Towers):
        return towers
    if towers is True or towers == "auto":
        if callable(getattr(model, "user_embedding", None)) and callable(getattr(model, "item_embedding", None)):
            return Towers()
        raise ModelError(f"towers='auto' recognises models with user_embedding()/item_embedding() methods; "
                         f"{type(model).__name__} has none: name them, e.g. towers=('user_tower', 'item_tower')")
    if isinstance(towers, str):
        return parse(towers)
    if isinstance(towers, dict):
        return Towers(**towers)
    if isinstance(towers, (tuple, list)) and len(towers) == 2:
        return Towers(user=towers[0], item=towers[1])
    raise ModelError(f"towers must be 'auto', (user, item), a dict or a Towers, got {towers!r}")


def parse(text: str) -> Towers:
    """The CLI form: ``auto`` or ``USER_METHOD,ITEM_METHOD[:user_input+user_input...]``."""
    if text == "auto":
        raise ModelError("parse('auto') has no model to recognise; pass it to resolve()")
    methods, _, inputs = text.partition(":")
    parts = [p.strip() for p in methods.split(",")]
    if len(parts) != 2:
        raise ModelError(f"--towers takes 'auto' or USER_METHOD,ITEM_METHOD[:input+input], got {text!r}")
    kw = {"user_inputs": tuple(i.strip() for i in inputs.split("+"))} if inputs else {}
    return Towers(user=parts[0], item=parts[1], **kw)


class RetrievalModule(nn.Module):
    """``forward(user_inputs: dict) -> scores [B, num_items]``: the user tower, then the item
    matrix as a bias-free Linear (the raw dot product; ``link`` says how it maps to the pairwise output)."""

    def __init__(self, model: nn.Module, towers: Towers, item_matrix: torch.Tensor, link: str):
        super().__init__()
        self.source, self.towers, self.link = model, towers, link
        self.items = nn.Linear(item_matrix.shape[1], item_matrix.shape[0], bias=False)
        with torch.no_grad():
            self.items.weight.copy_(item_matrix)

    def forward(self, user_inputs: dict) -> torch.Tensor:
        return self.items(self.towers.side(self.source, "user", user_inputs))


@dataclass
class Retrieval:
    """A prepared retrieval compile: the module to compile, the data views it takes, and the facts
    the manifest records."""
    module: RetrievalModule
    towers: Towers
    link: str
    num_items: int
    dim: int
    claim: dict                     # rows checked and the worst difference


def prepare(model, towers, data) -> Retrieval:
    """Check the towers claim on ``data``'s rows and build the module to compile."""
    t = resolve(model, towers)
    train = getattr(data, "train", data)
    pair = getattr(train, "inputs", None)
    needed = list(t.user_inputs) + [t.item_input]
    if not isinstance(pair, dict) or any(n not in pair for n in needed):
        raise DataError(f"a retrieval compile needs pairwise rows with inputs {needed} (e.g. RetrievalData); "
                        f"the data has {sorted(pair) if isinstance(pair, dict) else type(data).__name__}")
    n_items = t.num_items or getattr(data, "num_items", None) or getattr(model, "num_items", None)
    if not n_items:
        raise DataError("towers: how many items? give Towers(num_items=...) or RetrievalData")
    model = model.eval()
    with torch.no_grad():
        matrix = _item_matrix(model, t, int(n_items))
        link, claim = _check_claim(model, t, pair, matrix)
    module = RetrievalModule(model, t, matrix, link).eval()
    return Retrieval(module=module, towers=t, link=link, num_items=int(n_items), dim=int(matrix.shape[1]),
                     claim=claim)


def _item_matrix(model, t: Towers, n: int) -> torch.Tensor:
    rows = t.items or {t.item_input: np.arange(n, dtype=np.int64)}
    short = {k: len(np.asarray(v)) for k, v in rows.items() if len(np.asarray(v)) != n}
    if short:
        raise DataError(f"towers: items must hold one row per item ({n}); got {short}")
    feeds = {k: torch.as_tensor(np.asarray(v)) for k, v in rows.items()}
    out = [t.side(model, "item", {k: v[s:s + 65536] for k, v in feeds.items()}) for s in range(0, n, 65536)]
    m = torch.cat(out).float()
    if m.ndim != 2 or m.shape[0] != n:
        raise ModelError(f"the item tower gave shape {tuple(m.shape)} for {n} items; it must give [items, dim]")
    return m


def _check_claim(model, t: Towers, pair: dict, matrix: torch.Tensor) -> tuple[str, dict]:
    """The link from dot(user, item) to the model's pairwise output, checked on sample rows."""
    from ..graph.io import CallConvention
    n = len(np.asarray(pair[t.item_input]))
    rows = np.random.default_rng(0).choice(n, size=min(n, CLAIM_ROWS), replace=False)
    sample = {k: torch.as_tensor(np.asarray(v)[rows]) for k, v in pair.items()}
    call = CallConvention.infer(model, list(sample))
    out = call(model, sample)
    out = (out if isinstance(out, torch.Tensor) else torch.as_tensor(np.asarray(out))).float().reshape(-1)
    user = t.side(model, "user", {k: sample[k] for k in t.user_inputs}).float()
    if user.ndim != 2 or user.shape[1] != matrix.shape[1]:
        raise ModelError(f"the user tower gave shape {tuple(user.shape)}; the item tower's vectors have "
                         f"{matrix.shape[1]} columns: the towers must give [rows, same dim]")
    ids = sample[t.item_input].long().reshape(-1)
    if ids.min() < 0 or ids.max() >= matrix.shape[0]:
        raise DataError(f"item ids in the data reach {int(ids.max())}, outside 0..{matrix.shape[0] - 1}")
    dot = (user * matrix[ids]).sum(1)
    o, d = out.double().numpy(), dot.double().numpy()
    if o.shape != d.shape:
        raise ModelError(f"the model's pairwise output has {o.size} values for {d.size} rows; towers need one "
                         "score per (user, item) row")
    scale = max(1.0, float(np.abs(d).max()))
    for link, f in (("identity", d), ("sigmoid", 1.0 / (1.0 + np.exp(-d)))):
        worst = float(np.abs(o - f).max())
        if worst <= 1e-4 * scale:
            return link, {"rows": int(len(rows)), "max_abs_diff": worst}
    order = np.argsort(d, kind="stable")
    steps = np.diff(o[order])
    tol = 1e-5 * max(1.0, float(np.abs(o).max()))
    ties = np.diff(d[order]) <= 1e-6 * scale
    bad = np.flatnonzero((steps < -tol) | (ties & (np.abs(steps) > tol)))
    if bad.size or np.ptp(o) <= tol:
        i, j = (order[bad[0]], order[bad[0] + 1]) if bad.size else (order[0], order[-1])
        raise ModelError(f"the model's output is not a function of dot(user tower, item tower) that keeps its "
                         f"order: sample rows {int(rows[i])} and {int(rows[j])} have dots {d[i]:.5g} <= {d[j]:.5g} "
                         f"but outputs {o[i]:.5g}, {o[j]:.5g}; name the towers whose dot product the model scores")
    return "monotone", {"rows": int(len(rows)), "max_abs_diff": None}


def user_views(data, towers: Towers):
    """RetrievalData (or a pairwise Dataset) with its rows cut to the user inputs, one row per user
    (the compiled module takes only those; ranking figures still come from the pairwise view)."""
    def cut(ds):
        if ds is None or not hasattr(ds, "inputs"):
            return ds
        _, first = np.unique(_user_key({k: np.asarray(ds.inputs[k]) for k in towers.user_inputs}), axis=0,
                             return_index=True)
        first = np.sort(first)
        return dataclasses.replace(ds, inputs={k: np.asarray(ds.inputs[k])[first] for k in towers.user_inputs},
                                   label=np.asarray(ds.label)[first],
                                   vocab={k: v for k, v in ds.vocab.items() if k in towers.user_inputs})
    if hasattr(data, "train") and hasattr(data, "test_user"):
        return dataclasses.replace(data, train=cut(data.train))
    return cut(data)


def _user_key(user: dict) -> np.ndarray:
    """One row per query row holding every user-side value (rows equal here are the same user)."""
    return np.concatenate([np.asarray(v, dtype=np.float64).reshape(len(v), -1) for v in user.values()], axis=1)


def pairwise_fn(score_fn, towers: Towers, num_items: int):
    """A [B, num_items] scorer (flattened) as the pairwise predict_fn the metrics call: each distinct
    user is scored once, then each row reads its item's column."""
    def predict(inputs: dict) -> np.ndarray:
        user = {k: np.asarray(inputs[k]) for k in towers.user_inputs}
        _, first, inverse = np.unique(_user_key(user), axis=0, return_index=True,
                                       return_inverse=True)
        scores = np.asarray(score_fn({k: v[first] for k, v in user.items()}), dtype=np.float32)
        scores = scores.reshape(len(first), num_items)
        return scores[inverse.reshape(-1), np.asarray(inputs[towers.item_input]).reshape(-1)]
    return predict


ITEM_PARAM = "items.weight"        # RetrievalModule's item matrix, as the lowered program names it


def retrieval_section(r: Retrieval, program) -> dict:
    """The manifest's ``retrieval`` section (validated by the runtime's retrieval.py)."""
    param = ITEM_PARAM
    if param not in program.params:
        raise ModelError(f"the compiled program has no item matrix {param!r} (params: {sorted(program.params)[:8]})")
    return {"kind": "two_tower", "user_inputs": list(r.towers.user_inputs), "item_input": r.towers.item_input,
            "num_items": r.num_items, "dim": int(program.params[param].shape[1]), "item_matrix": param, "score": "dot", "link": r.link}


def prepare_compile(model, towers, data, train_data, valid_data, test_data):
    """compile()'s model and data for a retrieval compile: (Retrieval, module, data views...)."""
    from ..data import load as load_data
    data, train_data = load_data(data), load_data(train_data)
    valid_data, test_data = load_data(valid_data), load_data(test_data)
    r = prepare(model, towers, test_data if test_data is not None else data)
    # RetrievalData: its rows become user rows (ranking figures come from its held-out items); pairwise
    # rows (a Dataset) stay as they are for the figures, and only the spec's rows are cut (user_rows)
    views = [user_views(d, r.towers) if hasattr(d, "test_user") else d
             for d in (data, train_data, valid_data, test_data)]
    return (r, r.module, *views)


def user_rows(ds, r: Retrieval):
    """The rows that define the compiled module's inputs: one per user, the user inputs only."""
    return user_views(ds, r.towers) if any(k not in r.towers.user_inputs for k in ds.inputs) else ds


def pairwise_evaluation(r: Retrieval, evaluate):
    """evaluate(pairwise predict_fn) -> evaluate(scorer of [B, num_items])."""
    return lambda fn: evaluate(pairwise_fn(fn, r.towers, r.num_items))
