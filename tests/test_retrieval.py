"""On-device retrieval: a two-tower model compiled as user tower + item matrix, ranked in one call.

The MovieLens-100k two-tower is trained briefly, then compiled three ways: as the pairwise scorer
(the baseline), as a retrieval bundle in fp32 (every app format) and with the default int8 plan.
Recall@10 comes from the held-out item of each user (train items excluded), counted from topk()."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import edgecompress as ec
import edgecompress_runtime as ecr
from edgecompress.compile.towers import Towers, parse, prepare
from edgecompress.errors import InputError, ModelError
from edgecompress.models.two_tower import TwoTower


@pytest.fixture(scope="module")
def ml():
    from edgecompress.data import movielens_retrieval
    return movielens_retrieval()


@pytest.fixture(scope="module")
def model(ml):
    from edgecompress.train import train
    torch.manual_seed(0)
    m = TwoTower(ml.num_users, ml.num_items, embedding_dim=32, tower=(32,))
    train(m, ml.train, epochs=1, batch_size=1024, lr=3e-3, progress=False, seed=0)
    return m.eval()


@pytest.fixture(scope="module")
def bundles(model, ml, tmp_path_factory):
    from edgecompress.export.artifacts import available_formats
    from edgecompress.passes import DEFAULT_PLAN
    out = tmp_path_factory.mktemp("retrieval")
    apps = [f for f in ("litert", "executorch") if available_formats().get(f, "missing") is None]
    pair = ec.compile(model, target="local", data=ml, output=out / "pair.ecb", plan=[], formats=["numpy"],
                      progress=False)
    fp32 = ec.compile(model, target="local", data=ml, output=out / "fp32.ecb", plan=[], towers="auto",
                      formats=["numpy"] + apps, progress=False)
    int8 = ec.compile(model, target="local", data=ml, output=out / "int8.ecb", plan=list(DEFAULT_PLAN),
                      towers="auto", formats=["numpy"], progress=False)
    return {"pair": pair, "fp32": fp32, "int8": int8, "apps": apps}


def _recall_by_topk(m, ml, users, batched: bool) -> tuple[float, np.ndarray]:
    """recall@10 of the held-out item, train items excluded; and the top-10 rows."""
    test_item = dict(zip(ml.test_user.tolist(), ml.test_item.tolist()))
    seen = [np.setdiff1d(ml.train_items_by_user[u], [test_item[u]]) for u in users]
    if batched:
        top, _ = m.topk({"user_id": np.asarray(users)}, k=10, exclude=seen)
    else:
        every = {"item_id": np.arange(ml.num_items)}
        top = np.stack([m.topk({"user_id": np.array([u])}, every, k=10, exclude=ex)[0] for u, ex in zip(users, seen)])
    hits = [test_item[u] in row for u, row in zip(users, top)]
    return float(np.mean(hits)), top


def _torch_top10(model, users, num_items):
    with torch.no_grad():
        s = model.user_embedding(torch.as_tensor(users)) @ model.item_embedding(torch.arange(num_items)).T
    return torch.topk(s, 10, dim=1).indices.numpy(), s.numpy()


def test_topk_over_every_item_is_one_user_tower_call(bundles, model, ml):
    m = ecr.load(bundles["fp32"].path, backend="numpy")
    assert m.retrieval["num_items"] == ml.num_items == 1682 and m.retrieval["link"] == "identity"
    calls = []
    run = m._backend.run
    m._backend.run = lambda feeds: (calls.append({k: np.shape(v) for k, v in feeds.items()}), run(feeds))[1]
    ids, scores = m.topk({"user_id": np.array([42])}, k=10)
    assert calls == [{"user_id": (1,)}] and m.stats["runs"] == 1      # one call, the user inputs only
    want, s = _torch_top10(model, [42], ml.num_items)
    np.testing.assert_array_equal(ids, want[0])
    np.testing.assert_allclose(scores, s[0, ids], rtol=1e-5, atol=1e-6)
    # a batch of users is one call too, [B, k]; a candidate subset returns positions into it
    top, _ = m.topk({"user_id": np.array([42, 7, 300])}, k=5)
    assert top.shape == (3, 5) and len(calls) == 2
    np.testing.assert_array_equal(top[0], ids[:5])
    cand = np.array([5, 900, 17, 1600, int(ids[3])])
    pos, sc = m.topk({"user_id": np.array([42])}, {"item_id": cand}, k=2)
    assert cand[pos[0]] == ids[3] and sc[0] == pytest.approx(scores[3])
    np.testing.assert_array_equal(m.topk({"user_id": np.array([42])}, cand, k=2)[0], pos)


def test_recall_at_10_equals_the_pairwise_scorers(bundles, ml):
    pair = ecr.load(bundles["pair"].path, backend="numpy")
    retr = ecr.load(bundles["fp32"].path, backend="numpy")
    users = ml.test_user[:300]
    r_pair, top_pair = _recall_by_topk(pair, ml, users, batched=False)
    before = retr.stats["runs"]
    r_retr, top_retr = _recall_by_topk(retr, ml, users, batched=True)
    assert retr.stats["runs"] - before == 1                       # 300 users, one call
    assert r_retr == r_pair > 0.02                                # trained: far above chance (10 / 1682)
    assert (top_pair == top_retr).all(axis=1).mean() >= 0.99      # fp32: the same lists, up to float ties
    # compile's own figures (every held-out user, ties counted half) agree too
    assert bundles["fp32"].metrics_after["recall@10"] == pytest.approx(bundles["pair"].metrics_after["recall@10"],
                                                                     abs=1.5 / len(ml.test_user))


def test_int8_item_matrix_is_stored_rowwise_and_counted(bundles, ml):
    int8, fp32 = ecr.load(bundles["int8"].path, backend="numpy"), ecr.load(bundles["fp32"].path, backend="numpy")
    entry = int8.manifest["params"][int8.retrieval["item_matrix"]]
    assert entry["kind"] == "channel_int8"                        # one int8 row + one scale per item
    codes = int8.bundle.array(entry["members"]["codes"])
    assert codes.dtype == np.int8 and codes.shape == (ml.num_items, int8.retrieval["dim"])
    assert bundles["int8"].size_bytes == bundles["int8"].path.stat().st_size
    matrix_fp32 = ml.num_items * int8.retrieval["dim"] * 4
    assert bundles["fp32"].model_bytes - bundles["int8"].model_bytes > 0.6 * matrix_fp32
    # quantized items move scores by ~1e-3: recall@10 may move by a few users, not more
    users = ml.test_user[:300]
    r8, top8 = _recall_by_topk(int8, ml, users, batched=True)
    r32, top32 = _recall_by_topk(fp32, ml, users, batched=True)
    assert abs(r8 - r32) <= 0.02
    overlap = np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(top8, top32)])
    assert overlap >= 0.8


def test_app_backends_give_the_same_topk(bundles, ml):
    if not bundles["apps"]:
        pytest.skip("no app format toolchain installed")
    users = {"user_id": ml.test_user[:64]}
    want, want_s = ecr.load(bundles["fp32"].path, backend="numpy").topk(users, k=10)
    for backend in bundles["apps"]:
        m = ecr.load(bundles["fp32"].path, backend=backend)
        got, got_s = m.topk(users, k=10)
        assert m.stats["runs"] == 1, backend
        np.testing.assert_array_equal(got, want, err_msg=backend)
        np.testing.assert_allclose(got_s, want_s, atol=1e-5, err_msg=backend)
        assert m.manifest["artifacts"][backend]["parity"]["ok"]


def test_bad_topk_inputs_are_refused(bundles):
    m = ecr.load(bundles["fp32"].path, backend="numpy")
    u = {"user_id": np.array([3])}
    for k in (0, -1, "3", 2.5, True):
        with pytest.raises(InputError, match="positive integer"):
            m.topk(u, k=k)
    with pytest.raises(InputError, match="outside 0..1681"):
        m.topk(u, {"item_id": np.array([1, 1682])}, k=2)
    with pytest.raises(InputError, match="1-D"):
        m.topk(u, np.array([[1, 2]]), k=1)
    with pytest.raises(InputError, match="only the user inputs"):
        m.topk({"user_id": np.array([3]), "item_id": np.array([4])}, k=1)
    with pytest.raises(InputError, match="outside 0..1681"):
        m.topk(u, k=3, exclude=[5000])
    with pytest.raises(InputError):
        m.topk({"user_id": np.array([[3, 4]])}, k=3)
    with pytest.raises(InputError):
        m.topk({"user_id": np.array([10_000])}, k=3)                # no such user row
    pair = ecr.load(bundles["pair"].path, backend="numpy")
    with pytest.raises(InputError, match="needs candidate inputs"):
        pair.topk(u, k=3)
    ids, _ = pair.topk(u, {"item_id": np.arange(50)}, k=3)         # the pairwise form keeps working
    assert ids.shape == (3,)


class _NotADot(TwoTower):
    def forward(self, user_id, item_id):        # adds a user-only term: not a function of the dot product
        u, v = self.user_embedding(user_id), self.item_embedding(item_id)
        return (u * v).sum(1) + 3 * u.sum(1)


class _Sigmoid(TwoTower):
    def forward(self, user_id, item_id):
        return torch.sigmoid(super().forward(user_id, item_id))


def test_a_model_whose_output_is_not_a_tower_dot_product_is_refused(ml):
    torch.manual_seed(1)
    bad = _NotADot(ml.num_users, ml.num_items, embedding_dim=8, tower=(8,))
    with pytest.raises(ModelError, match="not a function of dot"):
        prepare(bad, "auto", ml)
    ok = _Sigmoid(ml.num_users, ml.num_items, embedding_dim=8, tower=(8,))
    assert prepare(ok, "auto", ml).link == "sigmoid"
    with pytest.raises(ModelError, match="no method 'towerz'"):
        prepare(ok, ("user_embedding", "towerz"), ml)
    with pytest.raises(ModelError, match="recognises models with user_embedding"):
        prepare(torch.nn.Linear(2, 1), "auto", ml)
    assert parse("user_embedding,item_embedding:user_id") == Towers()
    with pytest.raises(ModelError, match="--towers takes"):
        parse("just_one")


def test_package_carries_the_every_item_output(bundles, tmp_path):
    if "litert" not in bundles["apps"]:
        pytest.skip("LiteRT toolchain not installed")
    import json

    from edgecompress.export.app_package import package
    package(bundles["fp32"].path, android=tmp_path / "android")
    spec = json.loads((tmp_path / "android" / "input_spec.json").read_text())
    assert [i["name"] for i in spec["inputs"]] == ["user_id"]
    assert spec["outputs"][0]["shape"] == ["B", 1682]
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=(tmp_path / "android" / "model.tflite").read_bytes())
    key, names = next(iter(it.get_signature_list().items()))
    runner = it.get_signature_runner(key)
    (name, detail), = runner.get_input_details().items()
    users = np.full(max(1, int(detail["shape"][0])), 42, np.int32)      # a fixed-batch signature: repeat the user
    out = runner(**{name: users})[names["outputs"][0]]
    assert out.shape == (len(users), 1682)
    want, _ = ecr.load(bundles["fp32"].path, backend="numpy").topk({"user_id": np.array([42])}, k=10)
    np.testing.assert_array_equal(np.argsort(-out[0], kind="stable")[:10], want)


def test_a_library_dssm_compiles_as_retrieval(tmp_path):
    """torch-rechub's DSSM (sigmoid(cosine) of L2-normalised towers taking dicts), its towers named."""
    pytest.importorskip("torch_rechub")
    models = pytest.importorskip("tests.compat.models", reason="the compat extra is not installed")
    from tests.compat.test_compat import dataset
    cm = models.build("torch-rechub", "DSSM")
    data = dataset(cm)
    n = models.N_ITEMS + 1                             # id 0 is padding
    ids = np.arange(n)
    items = {"movie_id": ids, "cate_id": np.where(ids > 0, (ids - 1) % models.N_CATES + 1, 0)}
    towers = Towers(user="user_tower", item="item_tower", user_inputs=("user_id", "gender", "age", "hist_movie_id"),
                    item_input="movie_id", call="dict", num_items=n, items=items)
    res = ec.compile(cm.model, target="local", data=data, output=tmp_path / "dssm.ecb", plan=[], towers=towers,
                     formats=["numpy"], progress=False)
    assert res.metrics_after["auc"] == pytest.approx(res.metrics_before["auc"], abs=1e-6)
    m = ecr.load(res.path, backend="numpy")
    assert m.retrieval["link"] == "sigmoid" and m.retrieval["num_items"] == n
    rows = slice(0, 16)
    users = {k: data.inputs[k][rows] for k in towers.user_inputs}
    top, scores = m.topk(users, k=5)
    # the library's own pairwise output for every (user, item), ranked: the same items
    pair = {k: np.repeat(v, n, axis=0) for k, v in users.items()}
    pair.update({k: np.tile(v, 16) for k, v in items.items()})
    with torch.no_grad():
        prob = cm.model({k: torch.as_tensor(v) for k, v in pair.items()}).numpy().reshape(16, n)
    np.testing.assert_allclose(1 / (1 + np.exp(-scores)), np.take_along_axis(prob, top, 1), atol=1e-5)
    np.testing.assert_array_equal(top, np.argsort(-prob, axis=1, kind="stable")[:, :5])
