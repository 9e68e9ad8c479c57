"""Metrics, generic evaluation through predict_fn, and the trainer."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score
from torch import nn

from edgecompress.data import Dataset, leave_last_out, movielens_retrieval, recbole_wheel, synthetic_ctr
from edgecompress.data.movielens import RetrievalData
from edgecompress.errors import DataError
from edgecompress.metrics import (
    HIGHER_IS_BETTER,
    auc,
    evaluate_ctr,
    evaluate_retrieval,
    higher_is_better,
    logloss,
    metric_value,
    ndcg_at_k,
    recall_at_k,
    retrieval_ranks,
    torch_predict_fn,
)
from edgecompress.train import train


class FieldEmbLinear(nn.Module):
    """Embedding per sparse field, concatenated with dense, then Linear -> logit."""

    def __init__(self, vocab, dense_dim, dim=8):
        super().__init__()
        self.embs = nn.ModuleList(nn.Embedding(v, dim) for v in vocab)
        for e in self.embs:
            nn.init.normal_(e.weight, std=0.05)
        self.out = nn.Linear(len(vocab) * dim + dense_dim, 1)

    def forward(self, dense, sparse):
        parts = [e(sparse[:, i]) for i, e in enumerate(self.embs)] + [dense]
        return self.out(torch.cat(parts, 1)).squeeze(-1)


class DotModel(nn.Module):
    """User/item embeddings; logit = <u, i> + item bias."""

    def __init__(self, num_users, num_items, dim=16):
        super().__init__()
        self.user = nn.Embedding(num_users, dim)
        self.item = nn.Embedding(num_items, dim)
        self.bias = nn.Embedding(num_items, 1)
        for e in (self.user, self.item):
            nn.init.normal_(e.weight, std=0.1)
        nn.init.zeros_(self.bias.weight)

    def forward(self, user_id, item_id):
        return (self.user(user_id) * self.item(item_id)).sum(-1) + self.bias(item_id).squeeze(-1)


# ----------------------------------------------------------------------------- metric functions


def test_auc_and_logloss_match_sklearn():
    rng = np.random.default_rng(0)
    y = (rng.random(1000) < 0.3).astype(np.float32)
    z = rng.normal(size=1000) * 2 + y
    assert auc(y, z) == pytest.approx(roc_auc_score(y, z), abs=1e-12)
    p = 1 / (1 + np.exp(-z))
    assert logloss(y, z) == pytest.approx(log_loss(y, p), rel=1e-9)
    # stable for extreme logits (probabilities would round to exactly 0/1)
    assert logloss([1, 0], [1000.0, -1000.0]) == pytest.approx(0.0, abs=1e-12)
    assert logloss([0, 1], [1000.0, -1000.0]) == pytest.approx(1000.0)
    assert logloss([1, 0], [0.0, 0.0]) == pytest.approx(math.log(2))
    with pytest.raises(DataError, match="both positive and negative"):
        auc([1, 1, 1], [0.1, 0.2, 0.3])


def test_recall_and_ndcg_hand_computed():
    ranks = np.array([0, 3, 9, 10, 50])
    assert recall_at_k(ranks, 10) == pytest.approx(3 / 5)
    assert recall_at_k(ranks, 1) == pytest.approx(1 / 5)
    expected = (1 / math.log2(2) + 1 / math.log2(5) + 1 / math.log2(11)) / 5
    assert ndcg_at_k(ranks, 10) == pytest.approx(expected)
    assert ndcg_at_k(ranks, 100) == pytest.approx(expected + 1 / math.log2(12) / 5 + 1 / math.log2(52) / 5)
    assert ndcg_at_k([0, 0], 10) == 1.0 and recall_at_k([], 10) == 0.0


def test_metric_helpers():
    assert HIGHER_IS_BETTER == {"auc": True, "logloss": False, "recall@10": True, "ndcg@10": True}
    assert higher_is_better("logloss") is False and higher_is_better("recall@20") is True
    res = {"auc": np.float32(0.75), "n": 3}
    assert metric_value(res, "auc") == pytest.approx(0.75) and isinstance(metric_value(res, "auc"), float)
    with pytest.raises(KeyError, match="logloss"):
        metric_value(res, "logloss")


# ----------------------------------------------------------------------------- evaluation via predict_fn


def test_evaluate_ctr_batching_invariant():
    rng = np.random.default_rng(1)
    n = 1000
    z = rng.normal(size=n).astype(np.float32)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * z))).astype(np.float32)
    ds = Dataset("t", "ctr", {"z": z, "other": np.zeros((n, 2), np.float32)}, y)
    calls = []

    def predict(inputs):
        calls.append(len(inputs["z"]))
        return inputs["z"][:, None] * 2  # [B, 1] is accepted
    res = evaluate_ctr(predict, ds, batch_size=64)
    assert res["n"] == n and calls[0] == 64 and len(calls) == 16
    assert res["auc"] == pytest.approx(roc_auc_score(y, z))
    assert res["logloss"] == pytest.approx(logloss(y, 2 * z), rel=1e-6)
    assert evaluate_ctr(predict, ds, batch_size=4096) == pytest.approx(res)
    with pytest.raises(ValueError, match="non-finite"):
        evaluate_ctr(lambda x: np.full(len(x["z"]), np.nan), ds)
    with pytest.raises(ValueError, match=r"\[B\] logits"):
        evaluate_ctr(lambda x: np.zeros(3), ds)


def _tiny_retrieval():
    # 3 users, 6 items; fixed score table
    scores = np.array(
        [
            [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            [0.5, 0.5, 0.5, 0.5, 0.9, 0.5],
        ]
    )
    train = Dataset("tiny", "retrieval", {"user_id": np.array([0, 0, 1, 2]), "item_id": np.array([0, 1, 5, 4])},
                    np.ones(4), vocab={"user_id": [3], "item_id": [6]}, meta={"num_items": 6})  # fmt: skip
    data = RetrievalData(
        train=train,
        test_user=np.array([0, 1, 2]),
        test_item=np.array([3, 2, 0]),
        num_users=3,
        num_items=6,
        train_items_by_user=[np.array([0, 1]), np.array([5]), np.array([4])],
    )
    calls = []

    def predict(inputs):
        calls.append(len(inputs["user_id"]))
        return scores[inputs["user_id"], inputs["item_id"]]

    return data, predict, calls


def test_evaluate_retrieval_hand_computed():
    data, predict, calls = _tiny_retrieval()
    # user 0: items 0,1 excluded -> 2 (0.7) beats 3 (0.6): rank 1
    # user 1: item 5 excluded -> 4 (0.5), 3 (0.4) beat 2 (0.3): rank 2
    # user 2: item 4 excluded -> items 0..3,5 all tie at 0.5: 4 ties // 2 -> rank 2
    ranks = retrieval_ranks(predict, data, batch_size=6)  # one user per call
    assert ranks.tolist() == [1, 2, 2] and calls == [6, 6, 6]
    calls.clear()
    res = evaluate_retrieval(predict, data, ks=(1, 2, 10), batch_size=1000)  # all users in one call
    assert calls == [18]
    assert res["n_users"] == 3
    assert res["recall@1"] == 0.0 and res["recall@2"] == pytest.approx(1 / 3) and res["recall@10"] == 1.0
    assert res["ndcg@10"] == pytest.approx((1 / math.log2(3) + 2 / math.log2(4)) / 3)
    assert res["ndcg@2"] == pytest.approx(1 / math.log2(3) / 3)
    assert evaluate_retrieval(predict, data, max_users=1)["n_users"] == 1
    # a test item that also sits in the user's train items still competes
    data.train_items_by_user[0] = np.array([0, 1, 3])
    assert retrieval_ranks(predict, data)[0] == 1


def test_torch_predict_fn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 1))

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            return self.m(x)  # [B, 1]

    w = Wrap().train()
    fn = torch_predict_fn(w)
    x = np.random.default_rng(0).normal(size=(5, 3))  # float64 in
    out = fn({"x": x})
    assert out.shape == (5,) and out.dtype == np.float32
    assert not w.training  # eval mode: dropout off, deterministic
    assert np.array_equal(out, fn({"x": x}))
    with torch.no_grad():
        ref = model(torch.tensor(x, dtype=torch.float32)).numpy().reshape(-1)
    assert np.allclose(out, ref)


# ----------------------------------------------------------------------------- trainer


def test_train_ctr_synthetic_reaches_auc():
    ds = synthetic_ctr(n=60_000, seed=0)
    tr, _, te = ds.split((0.8, 0.1, 0.1), seed=0)
    threads = torch.get_num_threads()
    model = FieldEmbLinear(ds.vocab["sparse"], ds.inputs["dense"].shape[1])
    before = evaluate_ctr(torch_predict_fn(model), te)
    hist = train(model, tr, epochs=2, batch_size=512, lr=1e-2, seed=0, progress=False)
    after = evaluate_ctr(torch_predict_fn(model), te)
    assert torch.get_num_threads() == threads
    assert hist["epochs"] == 2 and hist["steps"] == 2 * math.ceil(len(tr) / 512) and not hist["stopped_early"]
    assert len(hist["loss"]) == 2 and hist["loss"][1] < hist["loss"][0]
    assert after["auc"] > 0.65, after
    assert after["auc"] > before["auc"] + 0.1
    assert after["logloss"] < before["logloss"]
    assert after["auc"] < ds.meta["bayes_auc"]


def test_train_deterministic_and_time_budget():
    ds = synthetic_ctr(n=4000, seed=2, vocab_sizes=(100, 50))
    weights = []
    for _ in range(2):
        torch.manual_seed(123)
        m = FieldEmbLinear(ds.vocab["sparse"], 13)
        train(m, ds, epochs=1, batch_size=256, seed=5, progress=False)
        weights.append(m.out.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])
    m = FieldEmbLinear(ds.vocab["sparse"], 13)
    hist = train(m, ds, epochs=50, batch_size=64, time_budget_s=0.0, progress=False)
    assert hist["stopped_early"] and hist["steps"] == 1 and hist["epochs"] < 1


def _clustered_pairs(seed=0, users=200, items=300, groups=10, per_user=15):
    """Each user likes the items of one group; interactions in random time order."""
    rng = np.random.default_rng(seed)
    group_items = np.arange(items).reshape(groups, -1)
    u, i = [], []
    for user in range(users):
        chosen = rng.choice(group_items[user % groups], per_user, replace=False)
        u += [user] * per_user
        i += chosen.tolist()
    u, i = np.array(u), np.array(i)
    return leave_last_out(u, i, rng.permutation(len(u)), users, items, name="clustered")


def test_train_retrieval_with_negatives():
    data = _clustered_pairs()
    assert len(data.test_user) == 200 and len(data.train) == 200 * 14
    torch.manual_seed(0)
    model = DotModel(200, 300)
    before = evaluate_retrieval(torch_predict_fn(model), data)
    seen = []

    def spy(**inputs):
        seen.append((inputs["user_id"].shape[0], inputs["item_id"]))
        return model(**inputs)

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, user_id, item_id):
            return spy(user_id=user_id, item_id=item_id)

    hist = train(Spy(), data.train, epochs=30, batch_size=256, lr=2e-2, negatives=4, seed=0, progress=False)
    assert seen[0][0] == 256 * 5  # positives + 4 negatives each
    assert seen[0][1][256:].max() < 300
    assert hist["loss"][-1] < hist["loss"][0]
    after = evaluate_retrieval(torch_predict_fn(model), data, ks=(10, 50))
    # random ranking over ~286 candidates gives recall@10 ~0.035; each group has 16 unseen candidates
    assert before["recall@10"] < 0.15
    assert after["recall@10"] > 0.4, after
    assert after["recall@50"] > 0.9 and after["ndcg@10"] > 0.15


def test_train_retrieval_movielens_beats_random():
    rd = movielens_retrieval(cache_dir=recbole_wheel().parent)
    torch.manual_seed(0)
    model = DotModel(rd.num_users, rd.num_items, dim=32)
    train(model, rd.train, epochs=3, batch_size=1024, lr=5e-3, negatives=4, seed=0, progress=False)
    res = evaluate_retrieval(torch_predict_fn(model), rd, ks=(10,))
    assert res["n_users"] == 943
    assert res["recall@10"] > 0.04, res  # random: ~10/1580 = 0.006


def test_train_errors():
    ds = Dataset("r", "retrieval", {"user_id": np.array([0, 1])}, np.ones(2))
    with pytest.raises(DataError, match="item_id"):
        train(DotModel(2, 2), ds, progress=False)
    ds = Dataset("r", "retrieval", {"user_id": np.array([0, 1]), "item_id": np.array([0, 1])}, np.ones(2))
    with pytest.raises(DataError, match="num_items"):
        train(DotModel(2, 2), ds, progress=False)
