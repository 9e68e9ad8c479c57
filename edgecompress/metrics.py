"""Quality metrics, evaluated through a plain ``predict_fn`` so the same code scores a
PyTorch model and a compiled bundle.

``predict_fn(inputs: dict[str, np.ndarray]) -> np.ndarray`` returns float logits [B].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from edgecompress.errors import DataError

if TYPE_CHECKING:
    from edgecompress.data.dataset import Dataset
    from edgecompress.data.movielens import RetrievalData

PredictFn = Callable[[dict], np.ndarray]

HIGHER_IS_BETTER = {"auc": True, "logloss": False, "recall@10": True, "ndcg@10": True}


def higher_is_better(name: str) -> bool:
    """Direction of a metric; knows ``recall@k`` / ``ndcg@k`` for any k."""
    if name in HIGHER_IS_BETTER:
        return HIGHER_IS_BETTER[name]
    if name.split("@", 1)[0] in ("recall", "ndcg", "hit"):
        return True
    raise KeyError(f"unknown metric {name!r}; known: {sorted(HIGHER_IS_BETTER)} and recall@k / ndcg@k")


def metric_value(results: dict, name: str) -> float:
    """``results[name]`` as a float, with a clear error when the metric is absent."""
    if name not in results:
        raise KeyError(f"metric {name!r} not in results (have {sorted(results)})")
    return float(results[name])


def auc(label, score) -> float:
    """ROC AUC (scikit-learn)."""
    from sklearn.metrics import roc_auc_score

    label = np.asarray(label).reshape(-1)
    score = np.asarray(score, dtype=np.float64).reshape(-1)
    if len(np.unique(label)) < 2:
        raise DataError("AUC needs both positive and negative labels; evaluate on a larger or shuffled sample")
    if not np.isfinite(score).all():
        raise ValueError(f"AUC got {int((~np.isfinite(score)).sum())} non-finite score(s)")
    return float(roc_auc_score(label, score))


def logloss(label, logit) -> float:
    """Mean binary cross-entropy computed stably from logits: softplus(z) - y*z."""
    y = np.asarray(label, dtype=np.float64).reshape(-1)
    z = np.asarray(logit, dtype=np.float64).reshape(-1)
    return float(np.mean(np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z)))))


def recall_at_k(ranks, k: int) -> float:
    """Hit rate: share of held-out items ranked in the top k (ranks are 0-based)."""
    ranks = np.asarray(ranks)
    return float(np.mean(ranks < k)) if ranks.size else 0.0


def ndcg_at_k(ranks, k: int) -> float:
    """NDCG@k with one relevant item per user: 1/log2(rank+2) if rank < k else 0."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if not ranks.size:
        return 0.0
    return float(np.mean(np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)))


def _logits(predict_fn: PredictFn, inputs: dict, n: int) -> np.ndarray:
    out = np.asarray(predict_fn(inputs), dtype=np.float32)
    if out.size != n:
        raise ValueError(f"predict_fn returned {out.shape} for a batch of {n} rows; it must return [B] logits")
    return out.reshape(n)


def evaluate_ctr(predict_fn: PredictFn, dataset: "Dataset", batch_size: int = 4096) -> dict:
    """``{"auc", "logloss", "n"}`` of ``predict_fn`` logits over ``dataset``."""
    chunks = [_logits(predict_fn, x, len(y)) for x, y in dataset.batches(batch_size)]
    z = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    bad = ~np.isfinite(z)
    if bad.any():
        raise ValueError(f"predict_fn returned {int(bad.sum())} non-finite logit(s) out of {len(z)}")
    return {"auc": auc(dataset.label, z), "logloss": logloss(dataset.label, z), "n": int(len(z))}


def retrieval_ranks(
    predict_fn: PredictFn, data: "RetrievalData", max_users: int | None = None, batch_size: int = 65536
) -> np.ndarray:
    """0-based rank of each test user's held-out item among all items, train items excluded.

    Several users are scored per ``predict_fn`` call (about ``batch_size`` rows).
    Ties count half: rank = #higher + #equal // 2, so a constant model ranks at chance.
    """
    users, targets = data.test_user, data.test_item
    if max_users is not None:
        users, targets = users[:max_users], targets[:max_users]
    n_items = int(data.num_items)
    per_call = max(1, batch_size // n_items)
    all_items = np.arange(n_items, dtype=np.int64)
    ranks = np.empty(len(users), dtype=np.int64)
    for start in range(0, len(users), per_call):
        u = users[start : start + per_call]
        t = targets[start : start + per_call]
        inputs = {"user_id": np.repeat(u, n_items).astype(np.int64), "item_id": np.tile(all_items, len(u))}
        scores = _logits(predict_fn, inputs, len(u) * n_items).astype(np.float64).reshape(len(u), n_items)
        if not np.isfinite(scores).all():
            raise ValueError("predict_fn returned non-finite scores during retrieval evaluation")
        rows = np.arange(len(u))
        target_score = scores[rows, t]
        for r, user in enumerate(u):
            scores[r, data.train_items_by_user[user]] = -np.inf
        scores[rows, t] = target_score  # the held-out item always competes
        higher = (scores > target_score[:, None]).sum(1)
        equal = (scores == target_score[:, None]).sum(1) - 1
        ranks[start : start + len(u)] = higher + equal // 2
    return ranks


def evaluate_retrieval(
    predict_fn: PredictFn,
    data: "RetrievalData",
    ks=(10,),
    max_users: int | None = None,
    batch_size: int = 65536,
) -> dict:
    """``{"recall@k", "ndcg@k" for k in ks, "n_users"}`` ranking all items per test user."""
    ranks = retrieval_ranks(predict_fn, data, max_users=max_users, batch_size=batch_size)
    out: dict = {}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(ranks, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranks, k)
    out["n_users"] = int(len(ranks))
    return out


def torch_predict_fn(model) -> PredictFn:
    """Wrap a torch model (``model(**inputs) -> logits``) as a numpy ``predict_fn``."""
    def predict(inputs: dict) -> np.ndarray:
        from .graph.io import CallConvention, source_predict_fn
        return source_predict_fn(model, CallConvention("named", list(inputs)), [], 0)(inputs)

    return predict
