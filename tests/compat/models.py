"""Compatibility suite: recommendation models from two public libraries, built the way their
docs/examples build them, on seeded synthetic data, briefly trained.

    deepctr-torch==0.3.0   (``from deepctr_torch.models import DeepFM`` ...)
    torch-rechub==0.9.0    (``from torch_rechub.models.ranking import DeepFM`` ...)

Both are installed by the ``compat`` extra (pyproject.toml). Every builder returns a
``CompatModel``; ``build(library, name)`` / ``build_all()`` / ``BUILDERS`` list them.

How the two libraries take their inputs (what ``CompatModel.inputs`` holds):

* deepctr-torch: ``forward(self, X)`` with ONE float tensor ``X`` [N, n_columns]. The columns are
  the features in order of first appearance in ``linear_feature_columns + dnn_feature_columns``
  (``model.feature_index``: name -> (start, end)); SparseFeat = 1 column, DenseFeat = ``dimension``
  columns, VarLenSparseFeat = ``maxlen`` columns followed by its ``length_name`` column (once, where it
  first appears). Ids are stored as floats and cast with ``.long()`` inside forward.
  ``CompatModel.inputs == {"X": float32 [N, n_columns]}``, forward_style "single_tensor".
* torch-rechub: ``forward(self, x)`` with ONE dict of tensors keyed by the feature names given to
  SparseFeature / DenseFeature / SequenceFeature. Sparse ids int64 [N], dense float32 [N],
  sequences int64 [N, L]. ``CompatModel.inputs`` is that dict, forward_style "dict".

Outputs: every ranking / multi-task model of both libraries ends in torch.sigmoid inside forward
(deepctr PredictionLayer(task="binary"): [N, 1] or [N, T]; rechub: [N] or [N, T]); YoutubeDNN returns
logits [N, 1 + n_neg] (cosine / temperature). ``CompatModel.outputs["probability"]`` says which.

Sequences: padded with 0 (ids start at 1). deepctr masks by the length column (DIN) or id != 0
(pooled VarLenSparseFeat); rechub masks only when SequenceFeature(padding_idx=...) is set and pooling
is mean/sum ("concat" pooling, as DIN uses, never masks). ``id_columns`` records both per field.

Determinism: data come from ``np.random.default_rng(seed)``; every model is built right after
``torch.manual_seed`` and trained on one intra-op thread with a seeded ``torch.Generator`` for the
batch order: the same seed gives bit-identical weights, whatever was built before.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

N_TRAIN = 8192
N_HELDOUT = 2048
SEED = 2024
EMB = 8            # every sparse embedding width (FM / CIN / AutoInt / ONN need equal widths)


@dataclass
class CompatModel:
    library: str                 # "deepctr-torch" | "torch-rechub"
    name: str                    # the library's class name
    model: torch.nn.Module       # trained, in eval mode
    inputs: dict                 # held-out rows (N_HELDOUT), numpy, exactly what forward receives
    label: object                # held-out labels: float32 [N] or, multi-task, float32 [N, T]
    train_inputs: dict           # training rows (N_TRAIN), same layout as inputs
    train_label: object
    id_columns: list             # one entry per model feature, see _field()
    forward_style: str           # "single_tensor" (forward(X)) | "dict" (forward(x: dict)) | "named"
    forward_arg: str             # the name of forward's parameter ("X" / "x")
    outputs: dict                # {"kind", "shape", "names", "probability": [bool per output column]}
    metrics: dict = field(default_factory=dict)   # held-out AUC per task (retrieval: top-1 accuracy)
    seconds: float = 0.0         # build + train wall time
    notes: list = field(default_factory=list)

    def torch_args(self, inputs: dict | None = None) -> tuple:
        """Positional args for ``model(*args)`` (and for ``torch.export.export(model, args)``)."""
        inputs = self.inputs if inputs is None else inputs
        t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
        if self.forward_style == "single_tensor":
            return (t[self.forward_arg],)
        if self.forward_style == "dict":
            return (t,)
        return tuple(t.values())

    def predict(self, inputs: dict | None = None) -> np.ndarray:
        with torch.no_grad():
            return self.model(*self.torch_args(inputs)).detach().numpy()

    def outputs_of(self, inputs: dict) -> np.ndarray:
        """The model's output on ``inputs`` as float32 [N, total width] (every head side by side)."""
        with torch.no_grad():
            out = self.model(*self.torch_args(inputs))
        return out.detach().float().numpy().reshape(len(next(iter(inputs.values()))), -1)

    def rows(self, inputs: dict, idx) -> dict:
        return {k: v[idx] for k, v in inputs.items()}


def bundle_outputs(model, inputs: dict) -> np.ndarray:
    """A loaded bundle's output on ``inputs`` in the same [N, total width] layout."""
    out = model.predict(inputs)
    n = len(next(iter(inputs.values())))
    if isinstance(out, dict):
        return np.concatenate([np.asarray(out[o["name"]]).reshape(n, -1) for o in model.outputs], 1)
    return np.asarray(out).reshape(n, -1)


def _field(input_name, name, kind, vocab=None, columns=None, padding_id=None, masked=False, table=None,
           dtype=None, shape=None, max_value=None):
    """One input field. kind: sparse (one id per row) | sequence (L ids, padded with padding_id) |
    length (int count of valid ids of a sequence, not an embedding index) | dense (float).
    columns: [start, end) inside the 2-D input (deepctr's X), None when the field is the whole input.
    masked: the model ignores padding_id positions (False: padding rows are looked up like any id).
    table: which embedding table the ids index (shared tables: another feature's name).
    max_value: for kind "length", the largest valid value (the sequence's maxlen)."""
    return {"input": input_name, "name": name, "kind": kind, "columns": columns, "vocab_size": vocab,
            "padding_id": padding_id, "masked": masked, "table": table, "dtype": dtype, "shape": shape,
            "max_value": max_value}


# --------------------------------------------------------------------------------------------- data

def _zipf_ids(rng, vocab, n, a=1.1):
    p = 1.0 / np.arange(1, vocab + 1) ** a
    perm = rng.permutation(vocab)          # popular ids are not simply the small ones
    return perm[rng.choice(vocab, size=n, p=p / p.sum())].astype(np.int64)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _bernoulli(rng, logit):
    logit = logit - np.quantile(logit, 0.65)             # ~35 % positives
    return (rng.random(len(logit)) < _sigmoid(logit)).astype(np.float32)


SPARSE_VOCAB = {"C1": 1000, "C2": 400, "C3": 120, "C4": 40, "C5": 12, "C6": 4}
N_DENSE = 3


def tabular_data(seed: int = SEED, n: int = N_TRAIN + N_HELDOUT, tasks: int = 1) -> dict:
    """Criteo-like rows: sparse C1..C6 (Zipf ids 0..vocab-1), dense I1..I3 in [0, 1),
    label(s) from per-id weights, a dense term and a C1 x C2 interaction."""
    rng = np.random.default_rng(seed)
    d = {name: _zipf_ids(rng, v, n) for name, v in SPARSE_VOCAB.items()}
    dense = rng.random((n, N_DENSE)).astype(np.float32)
    for j in range(N_DENSE):
        d[f"I{j + 1}"] = dense[:, j]
    labels = []
    for _ in range(tasks):
        logit = sum(rng.normal(0, 0.8, v)[d[name]] for name, v in SPARSE_VOCAB.items())
        logit = logit + dense @ rng.normal(0, 1.5, N_DENSE)
        u1, u2 = rng.normal(0, 0.7, (SPARSE_VOCAB["C1"], 4)), rng.normal(0, 0.7, (SPARSE_VOCAB["C2"], 4))
        logit = logit + 1.5 * np.sum(u1[d["C1"]] * u2[d["C2"]], axis=1)
        labels.append(_bernoulli(rng, logit))
    d["label"] = labels[0] if tasks == 1 else np.stack(labels, axis=1)
    return d


N_USERS, N_ITEMS, N_CATES, SEQ_LEN, N_NEG = 300, 400, 20, 10, 3


def behaviour_data(seed: int = SEED, n: int = N_TRAIN + N_HELDOUT, padding: str = "post") -> dict:
    """User behaviour rows (DIN / two-tower). Items 1..N_ITEMS, item i has category 1 + (i-1) % N_CATES,
    id 0 is padding. Each user prefers one category; history = up to SEQ_LEN items (70 % from that
    category), padded with 0 at the end ("post", deepctr / rechub ranking) or start ("pre", rechub
    matching's gen_model_input). label: click on the target item, likelier when its category fills the
    history; neg_items: N_NEG random items (YoutubeDNN's list-wise negatives)."""
    rng = np.random.default_rng(seed)
    per_cate = N_ITEMS // N_CATES

    def item_of(cate):
        return cate + N_CATES * rng.integers(0, per_cate, size=np.shape(cate))

    pref = rng.integers(1, N_CATES + 1, N_USERS)
    user = rng.integers(0, N_USERS, n)
    length = rng.integers(1, SEQ_LEN + 1, n)
    hist_cate = np.where(rng.random((n, SEQ_LEN)) < 0.7, pref[user][:, None],
                         rng.integers(1, N_CATES + 1, (n, SEQ_LEN)))
    hist_item = item_of(hist_cate)
    valid = np.arange(SEQ_LEN)[None, :] < length[:, None]
    if padding == "pre":
        valid = valid[:, ::-1]
    hist_item, hist_cate = np.where(valid, hist_item, 0), np.where(valid, hist_cate, 0)
    tcate = np.where(rng.random(n) < 0.5, pref[user], rng.integers(1, N_CATES + 1, n))
    titem = item_of(tcate)
    share = (hist_cate == tcate[:, None]).sum(1) / length
    logit = 3.0 * share + rng.normal(0, 0.5, N_ITEMS + 1)[titem]
    return {
        "user_id": user.astype(np.int64), "gender": (user % 2).astype(np.int64), "age": (user % 7).astype(np.int64),
        "item_id": titem.astype(np.int64), "cate_id": tcate.astype(np.int64),
        "hist_item_id": hist_item.astype(np.int64), "hist_cate_id": hist_cate.astype(np.int64),
        "seq_length": length.astype(np.int64), "score": rng.random(n).astype(np.float32),
        "pos_item_id": item_of(pref[user]).astype(np.int64),
        "neg_items": rng.integers(1, N_ITEMS + 1, (n, N_NEG)).astype(np.int64),
        "label": _bernoulli(rng, logit),
    }


def _split(d: dict):
    tr = {k: v[:N_TRAIN] for k, v in d.items()}
    ho = {k: v[N_TRAIN:] for k, v in d.items()}
    return tr, ho


# ------------------------------------------------------------------------------------------ training

def _fit(model, forward, loss_of, n, *, epochs=2, batch_size=256, lr=5e-3, seed=SEED):
    """Plain Adam loop (what each library's fit does, minus printing / metrics / callbacks)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss = loss_of(forward(idx), idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model


# attention / two-tower models learn the behaviour data slower than the tabular ones learn theirs
BEHAVIOUR_FIT = {"epochs": 8, "lr": 1e-2}


def _auc(y, p):
    from sklearn.metrics import roc_auc_score
    y, p = np.asarray(y), np.asarray(p)
    if y.ndim == 1:
        return {"auc": round(float(roc_auc_score(y, p.reshape(len(y), -1)[:, 0])), 4)}
    return {f"auc_task{t}": round(float(roc_auc_score(y[:, t], p[:, t])), 4) for t in range(y.shape[1])}


# ------------------------------------------------------------------------------------- deepctr-torch

def _import_deepctr():
    """``import deepctr_torch`` runs ``check_version``, which starts a (non-daemon) thread doing an
    un-timed ``requests.get('https://pypi.python.org/pypi/deepctr-torch/json')`` and prints to stdout
    when that fails. Load its ``utils`` module first with that check disabled; nothing else changes."""
    if "deepctr_torch" not in sys.modules and "deepctr_torch.utils" not in sys.modules:
        spec = importlib.util.find_spec("deepctr_torch")
        path = os.path.join(list(spec.submodule_search_locations)[0], "utils.py")
        uspec = importlib.util.spec_from_file_location("deepctr_torch.utils", path)
        utils = importlib.util.module_from_spec(uspec)
        uspec.loader.exec_module(utils)
        utils.check_version = lambda version: None
        sys.modules["deepctr_torch.utils"] = utils
    import deepctr_torch
    return deepctr_torch


def _deepctr_X(model, xdict: dict) -> np.ndarray:
    """Exactly what BaseModel.fit / predict feed forward: dict -> list in feature_index order,
    1-D arrays -> [N, 1], concatenated on the last axis, cast to float32."""
    cols = []
    for name in model.feature_index:
        a = np.asarray(xdict[name])
        cols.append(a[:, None] if a.ndim == 1 else a)
    return np.concatenate(cols, axis=-1).astype(np.float32)


def _deepctr_fields(model, feature_columns) -> list:
    from deepctr_torch.inputs import DenseFeat, SparseFeat, VarLenSparseFeat
    by_name = {fc.name: fc for fc in feature_columns}
    lengths = {fc.length_name: fc for fc in feature_columns if isinstance(fc, VarLenSparseFeat) and fc.length_name}
    out = []
    for name, (s, e) in model.feature_index.items():
        fc = by_name.get(name)
        if isinstance(fc, SparseFeat):
            out.append(_field("X", name, "sparse", fc.vocabulary_size, [s, e], table=fc.embedding_name,
                              dtype="float32", shape=[None]))
        elif isinstance(fc, VarLenSparseFeat):
            # DIN keys: masked by the length column; pooled VarLenSparseFeat: masked by id != 0
            out.append(_field("X", name, "sequence", fc.vocabulary_size, [s, e], padding_id=0, masked=True,
                              table=fc.embedding_name, dtype="float32", shape=[None, fc.maxlen]))
        elif isinstance(fc, DenseFeat):
            out.append(_field("X", name, "dense", None, [s, e], dtype="float32", shape=[None, fc.dimension]))
        elif name in lengths:
            out.append(_field("X", name, "length", None, [s, e], dtype="float32", shape=[None],
                              max_value=lengths[name].maxlen))
    return out


def _deepctr_columns(dense=True):
    from deepctr_torch.inputs import DenseFeat, SparseFeat
    sparse = [SparseFeat(name, vocabulary_size=v, embedding_dim=EMB) for name, v in SPARSE_VOCAB.items()]
    dense_cols = [DenseFeat(f"I{j + 1}", 1) for j in range(N_DENSE)] if dense else []
    return sparse, dense_cols


def _deepctr_finish(name, model, feature_columns, data, *, tasks=1, t0, epochs=2, lr=5e-3, notes=()):
    tr, ho = _split(data)
    x_tr, x_ho = _deepctr_X(model, tr), _deepctr_X(model, ho)
    y_tr = torch.from_numpy(np.asarray(tr["label"], np.float32))
    X = torch.from_numpy(x_tr)

    def loss_of(pred, idx):   # BaseModel.fit: loss(reduction="sum") + L2 regularization + aux loss
        y = y_tr[idx]
        if tasks == 1:
            loss = F.binary_cross_entropy(pred.squeeze(-1), y, reduction="sum")
        else:
            loss = sum(F.binary_cross_entropy(pred[:, t], y[:, t], reduction="sum") for t in range(tasks))
        return loss + model.get_regularization_loss().squeeze() + model.aux_loss.squeeze()

    _fit(model, lambda idx: model(X[idx]), loss_of, len(x_tr), epochs=epochs, lr=lr)
    cm = CompatModel(
        library="deepctr-torch", name=name, model=model, inputs={"X": x_ho}, label=ho["label"],
        train_inputs={"X": x_tr}, train_label=tr["label"], id_columns=_deepctr_fields(model, feature_columns),
        forward_style="single_tensor", forward_arg="X",
        outputs={"kind": "tensor", "shape": [None, tasks],
                 "names": ["ctr"] if tasks == 1 else [f"task{t}" for t in range(tasks)],
                 "probability": [True] * tasks},
        notes=list(notes))
    cm.metrics = _auc(cm.label, cm.predict())
    cm.seconds = round(time.perf_counter() - t0, 3)
    return cm


def _deepctr_ranking(cls_name, *, dnn_dense=True, linear=True, **kw):
    """The run_classification_criteo.py recipe: SparseFeat(vocab, embedding_dim) + DenseFeat(name, 1),
    linear_feature_columns = dnn_feature_columns (models without a linear part take dnn only)."""
    def build(seed=SEED):
        t0 = time.perf_counter()
        dc = _import_deepctr()
        data = tabular_data(seed)
        sparse, dense = _deepctr_columns()
        dnn_cols = sparse + (dense if dnn_dense else [])
        lin_cols = sparse + dense
        torch.manual_seed(seed)
        cls = getattr(dc.models, cls_name)
        args = (lin_cols, dnn_cols) if linear else (dnn_cols,)
        model = cls(*args, task="binary", device="cpu", seed=seed, **kw)
        notes = [] if dnn_dense else ["dense features only in linear_feature_columns (dnn part rejects DenseFeat)"]
        return _deepctr_finish(cls_name, model, lin_cols if linear else dnn_cols, data, t0=t0, notes=notes)
    return build


def _deepctr_din(seed=SEED):
    """examples/run_din.py: user/gender/item/item_gender SparseFeat + score DenseFeat, hist_item /
    hist_item_gender VarLenSparseFeat sharing length_name "seq_length"; behaviour list ["item", ...]."""
    t0 = time.perf_counter()
    _import_deepctr()
    from deepctr_torch.inputs import DenseFeat, SparseFeat, VarLenSparseFeat
    from deepctr_torch.models import DIN
    b = behaviour_data(seed, padding="post")
    data = {"user": b["user_id"], "gender": b["gender"], "item": b["item_id"], "item_gender": b["cate_id"],
            "score": b["score"], "hist_item": b["hist_item_id"], "hist_item_gender": b["hist_cate_id"],
            "seq_length": b["seq_length"], "label": b["label"]}
    cols = [SparseFeat("user", N_USERS, embedding_dim=EMB), SparseFeat("gender", 2, embedding_dim=EMB),
            SparseFeat("item", N_ITEMS + 1, embedding_dim=EMB), SparseFeat("item_gender", N_CATES + 1, embedding_dim=EMB),
            DenseFeat("score", 1)]
    cols += [VarLenSparseFeat(SparseFeat("hist_item", N_ITEMS + 1, embedding_dim=EMB), SEQ_LEN, length_name="seq_length"),
             VarLenSparseFeat(SparseFeat("hist_item_gender", N_CATES + 1, embedding_dim=EMB), SEQ_LEN,
                              length_name="seq_length")]
    torch.manual_seed(seed)
    model = DIN(cols, ["item", "item_gender"], device="cpu", att_weight_normalization=True, seed=seed,
                dnn_hidden_units=(64, 32))
    notes = ["hist_* are separate tables (embedding_name = feature name), not shared with item / item_gender",
             "padding 0 masked via seq_length, not via the id"]
    return _deepctr_finish("DIN", model, cols, data, t0=t0, notes=notes, **BEHAVIOUR_FIT)


def _deepctr_multitask(cls_name, **kw):
    """examples/run_multitask_learning.py: dnn_feature_columns only, task_types binary x 2."""
    def build(seed=SEED):
        t0 = time.perf_counter()
        dc = _import_deepctr()
        data = tabular_data(seed, tasks=2)
        sparse, dense = _deepctr_columns()
        torch.manual_seed(seed)
        model = getattr(dc.models, cls_name)(sparse + dense, task_types=["binary", "binary"],
                                             task_names=["ctr", "like"], device="cpu", seed=seed, **kw)
        cm = _deepctr_finish(cls_name, model, sparse + dense, data, tasks=2, t0=t0)
        cm.outputs["names"] = ["ctr", "like"]
        return cm
    return build


DEEPCTR = {
    "DeepFM": _deepctr_ranking("DeepFM", dnn_hidden_units=(64, 32)),
    "DCN": _deepctr_ranking("DCN", dnn_hidden_units=(64, 32)),
    "DCNMix": _deepctr_ranking("DCNMix", dnn_hidden_units=(64, 32), low_rank=16),
    "xDeepFM": _deepctr_ranking("xDeepFM", dnn_hidden_units=(64, 32), cin_layer_size=(32, 32)),
    "AutoInt": _deepctr_ranking("AutoInt", dnn_hidden_units=(64, 32), att_layer_num=2),
    "WDL": _deepctr_ranking("WDL", dnn_hidden_units=(64, 32)),
    "NFM": _deepctr_ranking("NFM", dnn_hidden_units=(64, 32)),
    "PNN": _deepctr_ranking("PNN", linear=False, dnn_hidden_units=(64, 32)),
    "FiBiNET": _deepctr_ranking("FiBiNET", dnn_hidden_units=(64, 32)),
    "ONN": _deepctr_ranking("ONN", dnn_hidden_units=(64, 32)),
    "CCPM": _deepctr_ranking("CCPM", dnn_dense=False, dnn_hidden_units=(64,)),
    "AFM": _deepctr_ranking("AFM", dnn_dense=False),
    "DIN": _deepctr_din,
    "MMOE": _deepctr_multitask("MMOE", expert_dnn_hidden_units=(32,), tower_dnn_hidden_units=(16,)),
    "PLE": _deepctr_multitask("PLE", shared_expert_num=1, specific_expert_num=1, num_levels=2,
                              expert_dnn_hidden_units=(32,), tower_dnn_hidden_units=(16,)),
}


# -------------------------------------------------------------------------------------- torch-rechub

def _rechub_fields(features) -> list:
    from torch_rechub.basic.features import DenseFeature, SequenceFeature, SparseFeature
    out, seen = [], set()
    for f in features:
        if f.name in seen:
            continue
        seen.add(f.name)
        table = None if isinstance(f, DenseFeature) else (f.shared_with or f.name)
        if isinstance(f, SequenceFeature):
            masked = f.padding_idx is not None and f.pooling in ("mean", "sum")
            pad = 0 if f.padding_idx is None else f.padding_idx      # rechub's pad_sequences pads with 0
            out.append(_field(f.name, f.name, "sequence", f.vocab_size, padding_id=pad, masked=masked, table=table,
                              dtype="int64", shape=[None, None]))
        elif isinstance(f, SparseFeature):
            out.append(_field(f.name, f.name, "sparse", f.vocab_size, table=table, dtype="int64", shape=[None]))
        else:
            out.append(_field(f.name, f.name, "dense", dtype="float32", shape=[None]))
    return out


def _rechub_finish(name, model, features, data, *, t0, keys, tasks=1, loss="bce", outputs=None, notes=(),
                   epochs=2, lr=5e-3):
    tr, ho = _split(data)
    x_tr = {k: tr[k] for k in keys}
    x_ho = {k: ho[k] for k in keys}
    fields = _rechub_fields(features)
    for f in fields:
        if f["kind"] == "sequence":
            f["shape"] = [None, int(x_ho[f["name"]].shape[1])]
            if not (x_tr[f["name"]] == 0).any():     # a fixed-size id list (YoutubeDNN neg_items): no padding
                f["padding_id"], f["masked"] = None, False
    X = {k: torch.from_numpy(v) for k, v in x_tr.items()}
    y_tr = torch.from_numpy(np.asarray(tr["label"], np.float32))

    def loss_of(pred, idx):
        if loss == "listwise":      # MatchTrainer mode=2: softmax over [pos, negs], positive at index 0
            return F.cross_entropy(pred, torch.zeros(len(idx), dtype=torch.long))
        y = y_tr[idx]
        return F.binary_cross_entropy(pred, y) if tasks == 1 else \
            sum(F.binary_cross_entropy(pred[:, t], y[:, t]) for t in range(tasks))

    _fit(model, lambda idx: model({k: v[idx] for k, v in X.items()}), loss_of, N_TRAIN, epochs=epochs, lr=lr)
    cm = CompatModel(
        library="torch-rechub", name=name, model=model, inputs=x_ho, label=ho["label"], train_inputs=x_tr,
        train_label=tr["label"], id_columns=fields, forward_style="dict", forward_arg="x",
        outputs=outputs or {"kind": "tensor", "shape": [None] if tasks == 1 else [None, tasks],
                            "names": ["ctr"] if tasks == 1 else [f"task{t}" for t in range(tasks)],
                            "probability": [True] * tasks},
        notes=list(notes))
    pred = cm.predict()
    if loss == "listwise":
        cm.metrics = {"top1_acc": round(float((pred.argmax(1) == 0).mean()), 4), "candidates": int(pred.shape[1])}
    else:
        cm.metrics = _auc(cm.label, pred)
    cm.seconds = round(time.perf_counter() - t0, 3)
    return cm


def _rechub_tabular():
    from torch_rechub.basic.features import DenseFeature, SparseFeature
    # fresh feature objects per model: a SparseFeature caches its nn.Embedding (get_embedding_layer),
    # so two models built from the same objects would share (and co-train) their tables
    sparse = [SparseFeature(name, vocab_size=v, embed_dim=EMB) for name, v in SPARSE_VOCAB.items()]
    dense = [DenseFeature(f"I{j + 1}") for j in range(N_DENSE)]
    return sparse, dense


MLP = {"dims": [64, 32], "dropout": 0.2, "activation": "relu"}


def _rechub_ranking(cls_name, make_kwargs, notes=()):
    """examples/ranking/run_criteo.py: DenseFeature(name) + SparseFeature(name, vocab_size, embed_dim)."""
    def build(seed=SEED):
        t0 = time.perf_counter()
        from torch_rechub.models import ranking
        data = tabular_data(seed)
        sparse, dense = _rechub_tabular()
        torch.manual_seed(seed)
        kwargs = make_kwargs(sparse, dense)
        model = getattr(ranking, cls_name)(**kwargs)
        feats = [f for v in kwargs.values() if isinstance(v, list) for f in v if hasattr(f, "name")]
        keys = [f.name for f in dense + sparse if f in feats]
        return _rechub_finish(cls_name, model, feats, data, t0=t0, keys=keys, notes=notes)
    return build


def _rechub_din(seed=SEED):
    """examples/ranking/run_amazon_electronics.py: target_item_id / target_cate_id / user_id
    SparseFeature (features = target_features), hist_item_id / hist_cate_id SequenceFeature
    pooling="concat" shared_with the target tables; post-padded with 0 (generate_seq_feature)."""
    t0 = time.perf_counter()
    from torch_rechub.basic.features import SequenceFeature, SparseFeature
    from torch_rechub.models.ranking import DIN
    b = behaviour_data(seed, padding="post")
    data = {"target_item_id": b["item_id"], "target_cate_id": b["cate_id"], "user_id": b["user_id"],
            "hist_item_id": b["hist_item_id"], "hist_cate_id": b["hist_cate_id"], "label": b["label"]}
    features = [SparseFeature("target_item_id", vocab_size=N_ITEMS + 1, embed_dim=EMB),
                SparseFeature("target_cate_id", vocab_size=N_CATES + 1, embed_dim=EMB),
                SparseFeature("user_id", vocab_size=N_USERS, embed_dim=EMB)]
    history = [SequenceFeature("hist_item_id", vocab_size=N_ITEMS + 1, embed_dim=EMB, pooling="concat",
                               shared_with="target_item_id"),
               SequenceFeature("hist_cate_id", vocab_size=N_CATES + 1, embed_dim=EMB, pooling="concat",
                               shared_with="target_cate_id")]
    torch.manual_seed(seed)
    model = DIN(features=features, history_features=history, target_features=features,
                mlp_params={"dims": [64, 32]}, attention_mlp_params={"dims": [32, 16]})
    keys = ["target_item_id", "target_cate_id", "user_id", "hist_item_id", "hist_cate_id"]
    notes = ["attention does not mask padding: pad id 0 rows take part in the weighted sum "
             "(their embedding row is trained like any other)"]
    return _rechub_finish("DIN", model, features + history, data, t0=t0, keys=keys, notes=notes, **BEHAVIOUR_FIT)


def _rechub_matching(cls_name):
    """examples/matching/run_ml_dssm.py / run_ml_youtube_dnn.py: user SparseFeatures + hist_movie_id
    SequenceFeature(pooling="mean", shared_with="movie_id"), item SparseFeatures; gen_model_input
    pre-pads the history with 0. YoutubeDNN adds neg_items SequenceFeature(pooling="concat",
    shared_with="movie_id") and trains list-wise (label = index 0)."""
    def build(seed=SEED):
        t0 = time.perf_counter()
        from torch_rechub.basic.features import SequenceFeature, SparseFeature
        from torch_rechub.models import matching
        b = behaviour_data(seed, padding="pre")
        data = {"user_id": b["user_id"], "gender": b["gender"], "age": b["age"], "hist_movie_id": b["hist_item_id"],
                "movie_id": b["item_id"], "cate_id": b["cate_id"], "neg_items": b["neg_items"], "label": b["label"]}
        user = [SparseFeature("user_id", vocab_size=N_USERS, embed_dim=16), SparseFeature("gender", vocab_size=2, embed_dim=16),
                SparseFeature("age", vocab_size=7, embed_dim=16)]
        if cls_name == "DSSM":
            # padding_idx=0 (documented SequenceFeature arg; the example leaves it None, so its mean
            # pooling averages the 0 pads too): exercises InputMask + masked mean pooling
            user += [SequenceFeature("hist_movie_id", vocab_size=N_ITEMS + 1, embed_dim=16, pooling="mean",
                                     shared_with="movie_id", padding_idx=0)]
            item = [SparseFeature("movie_id", vocab_size=N_ITEMS + 1, embed_dim=16),
                    SparseFeature("cate_id", vocab_size=N_CATES + 1, embed_dim=16)]
            torch.manual_seed(seed)
            model = matching.DSSM(user, item, temperature=0.02,
                                  user_params={"dims": [64, 32], "activation": "prelu"},
                                  item_params={"dims": [64, 32], "activation": "prelu"})
            keys = ["user_id", "gender", "age", "hist_movie_id", "movie_id", "cate_id"]
            notes = ["DSSM.forward ignores temperature: sigmoid(cosine) of L2-normalised towers",
                     "model.mode = 'user' / 'item' makes forward return one tower's embedding"]
            return _rechub_finish("DSSM", model, user + item, data, t0=t0, keys=keys, notes=notes, **BEHAVIOUR_FIT)
        data["movie_id"] = b["pos_item_id"]
        user += [SequenceFeature("hist_movie_id", vocab_size=N_ITEMS + 1, embed_dim=16, pooling="mean",
                                 shared_with="movie_id")]
        item = [SparseFeature("movie_id", vocab_size=N_ITEMS + 1, embed_dim=16)]
        neg = [SequenceFeature("neg_items", vocab_size=N_ITEMS + 1, embed_dim=16, pooling="concat",
                               shared_with="movie_id")]
        torch.manual_seed(seed)
        model = matching.YoutubeDNN(user, item, neg, user_params={"dims": [64, 16]}, temperature=0.02)
        keys = ["user_id", "gender", "age", "hist_movie_id", "movie_id", "neg_items"]
        out = {"kind": "tensor", "shape": [None, 1 + N_NEG], "names": ["scores[pos, neg1..]"],
               "probability": [False]}
        notes = ["output = cosine(user, item) / temperature for [movie_id, *neg_items]: logits, no sigmoid; "
                 "label is the positive's index 0 (MatchTrainer mode=2)",
                 "hist_movie_id without padding_idx (as the example): mean pooling counts the 0 pads",
                 "model.mode = 'user' / 'item' makes forward return one tower's embedding"]
        return _rechub_finish("YoutubeDNN", model, user + item + neg, data, t0=t0, keys=keys, loss="listwise",
                              outputs=out, notes=notes, **BEHAVIOUR_FIT)
    return build


def _rechub_multitask(cls_name):
    """examples/ranking/run_census.py: SparseFeature(embed_dim=4) + DenseFeature, two classification tasks."""
    def build(seed=SEED):
        t0 = time.perf_counter()
        from torch_rechub.basic.features import DenseFeature, SparseFeature
        from torch_rechub.models import multi_task
        data = tabular_data(seed, tasks=2)
        features = [SparseFeature(name, v, embed_dim=4) for name, v in SPARSE_VOCAB.items()] + \
                   [DenseFeature(f"I{j + 1}") for j in range(N_DENSE)]
        task_types = ["classification", "classification"]
        torch.manual_seed(seed)
        if cls_name == "MMOE":
            model = multi_task.MMOE(features, task_types, 4, expert_params={"dims": [16]},
                                    tower_params_list=[{"dims": [8]}, {"dims": [8]}])
        elif cls_name == "PLE":
            model = multi_task.PLE(features, task_types, n_level=1, n_expert_specific=2, n_expert_shared=1,
                                   expert_params={"dims": [16]}, tower_params_list=[{"dims": [8]}, {"dims": [8]}])
        else:
            model = multi_task.SharedBottom(features, task_types, bottom_params={"dims": [32]},
                                            tower_params_list=[{"dims": [8]}, {"dims": [8]}])
        keys = [f.name for f in features]
        return _rechub_finish(cls_name, model, features, data, t0=t0, keys=keys, tasks=2)
    return build


RECHUB = {
    "DeepFM": _rechub_ranking("DeepFM", lambda s, d: {"deep_features": d, "fm_features": s, "mlp_params": dict(MLP)},
                              notes=["as run_criteo.py: MLP over the dense features only, FM over the sparse"]),
    "WideDeep": _rechub_ranking("WideDeep", lambda s, d: {"wide_features": d, "deep_features": s,
                                                          "mlp_params": dict(MLP)}),
    "DCN": _rechub_ranking("DCN", lambda s, d: {"features": d + s, "n_cross_layers": 3, "mlp_params": {"dims": [64, 32]}}),
    "DCNv2": _rechub_ranking("DCNv2", lambda s, d: {"features": d + s, "n_cross_layers": 3, "mlp_params": dict(MLP)}),
    "EDCN": _rechub_ranking("EDCN", lambda s, d: {"features": d + s, "n_cross_layers": 3, "mlp_params": dict(MLP)}),
    "FiBiNet": _rechub_ranking("FiBiNet", lambda s, d: {"features": d + s, "reduction_ratio": 3, "mlp_params": dict(MLP)},
                               notes=["dense features are accepted but unused (EmbeddingLayer keeps only sparse "
                                      "embeddings when squeeze_dim=False)"]),
    "AutoInt": _rechub_ranking("AutoInt", lambda s, d: {"sparse_features": s, "dense_features": d, "num_layers": 2,
                                                        "num_heads": 2, "dropout": 0.2, "mlp_params": dict(MLP)}),
    "AFM": _rechub_ranking("AFM", lambda s, d: {"fm_features": s, "embed_dim": EMB, "t": 16}),
    "DIN": _rechub_din,
    "DSSM": _rechub_matching("DSSM"),
    "YoutubeDNN": _rechub_matching("YoutubeDNN"),
    "MMOE": _rechub_multitask("MMOE"),
    "PLE": _rechub_multitask("PLE"),
    "SharedBottom": _rechub_multitask("SharedBottom"),
}

def _one_thread(fn):
    """Build + train on one intra-op thread, then restore the caller's setting. On a loaded 2-core
    machine torch's 2 OpenMP threads stall each other (a BatchNorm1d on [2560, 32] took 37 ms instead
    of 0.06 ms: rechub DIN trained in 50 s instead of ~1 s); one thread is also bit-for-bit repeatable."""
    def build(seed=SEED):
        prev = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(seed)
        finally:
            torch.set_num_threads(prev)
    build.__doc__ = fn.__doc__
    return build


BUILDERS = {("deepctr-torch", k): _one_thread(v) for k, v in DEEPCTR.items()}
BUILDERS.update({("torch-rechub", k): _one_thread(v) for k, v in RECHUB.items()})


def build(library: str, name: str, seed: int = SEED) -> CompatModel:
    return BUILDERS[(library, name)](seed)


def build_all(seed: int = SEED):
    for (library, name), fn in BUILDERS.items():
        yield fn(seed)
