"""Datasets: Dataset container, synthetic CTR, .npz user data, MovieLens-100k."""

import subprocess
import time
import zipfile

import numpy as np
import pytest

from edgecompress.data import (
    Dataset,
    check_ids,
    load_movielens,
    load_npz,
    movielens_ctr,
    movielens_retrieval,
    recbole_wheel,
    save_npz,
    synthetic_ctr,
)
from edgecompress.data import movielens_files as ml
from edgecompress.errors import DataError


def small(n=10):
    return Dataset(
        name="t",
        task="ctr",
        inputs={"dense": np.arange(n * 2, dtype=np.float32).reshape(n, 2), "sparse": np.arange(n * 3).reshape(n, 3) % 5},
        label=(np.arange(n) % 2).astype(np.float32),
        vocab={"sparse": [5, 5, 5]},
        meta={"field_names": ["a", "b", "c"]},
    )


# ----------------------------------------------------------------------------- Dataset


def test_dataset_take_split_batches():
    ds = small(100)
    assert len(ds) == 100
    sub = ds.take(np.array([3, 5]))
    assert len(sub) == 2 and sub.inputs["sparse"][1].tolist() == ds.inputs["sparse"][5].tolist()
    assert sub.vocab == ds.vocab and sub.meta == ds.meta
    assert len(ds.take(slice(10, 20))) == 10

    parts = ds.split((0.8, 0.1, 0.1), seed=1)
    assert [len(p) for p in parts] == [80, 10, 10]
    rows = np.concatenate([p.inputs["dense"][:, 0] for p in parts])
    assert sorted(rows.tolist()) == sorted(ds.inputs["dense"][:, 0].tolist())  # disjoint and complete
    again = ds.split((0.8, 0.1, 0.1), seed=1)
    assert np.array_equal(parts[1].label, again[1].label)
    assert np.array_equal(parts[1].inputs["dense"], again[1].inputs["dense"])
    other = ds.split((0.8, 0.1, 0.1), seed=2)
    assert not np.array_equal(parts[1].inputs["dense"], other[1].inputs["dense"])
    assert [len(p) for p in ds.split((0.5, 0.5))] == [50, 50]

    batches = list(ds.batches(32))
    assert [len(y) for _, y in batches] == [32, 32, 32, 4]
    assert np.array_equal(np.concatenate([x["dense"] for x, _ in batches]), ds.inputs["dense"])
    shuffled = np.concatenate([x["dense"][:, 0] for x, _ in ds.batches(32, shuffle=True, seed=3)])
    assert not np.array_equal(shuffled, ds.inputs["dense"][:, 0])
    assert sorted(shuffled.tolist()) == ds.inputs["dense"][:, 0].tolist()


def test_dataset_validation_errors():
    with pytest.raises(DataError, match="same first dimension"):
        Dataset("x", "ctr", {"a": np.zeros(3)}, np.zeros(4))
    with pytest.raises(DataError, match="task"):
        Dataset("x", "ranking", {"a": np.zeros(3)}, np.zeros(3))
    with pytest.raises(DataError, match="2 field"):
        Dataset("x", "ctr", {"a": np.zeros((3, 2), np.int64)}, np.zeros(3), vocab={"a": [1]})
    with pytest.raises(DataError, match="sum to at most 1"):
        small().split((0.8, 0.5))


def test_check_ids_names_input_and_field():
    ds = small(10)
    check_ids(ds)
    ds.inputs["sparse"][4, 1] = 5
    with pytest.raises(DataError, match=r"sparse\[1\] \(b\).*id 5.*0\.\.4"):
        check_ids(ds)
    ds.inputs["sparse"][4, 1] = -1
    with pytest.raises(DataError, match=r"sparse\[1\].*id -1"):
        check_ids(ds)
    one = Dataset("u", "retrieval", {"user_id": np.array([0, 3])}, np.ones(2), vocab={"user_id": [3]})
    with pytest.raises(DataError, match="user_id contains id 3"):
        check_ids(one)


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_ctr_shapes_rate_speed():
    t = time.perf_counter()
    ds = synthetic_ctr(n=100_000, seed=0)
    elapsed = time.perf_counter() - t
    assert elapsed < 2.0, elapsed
    assert ds.task == "ctr" and len(ds) == 100_000
    assert ds.inputs["dense"].dtype == np.float32 and ds.inputs["dense"].shape == (100_000, 13)
    assert ds.inputs["sparse"].dtype == np.int64 and ds.inputs["sparse"].shape == (100_000, 8)
    assert ds.vocab["sparse"] == [20000, 10000, 5000, 2000, 1000, 500, 200, 100]
    check_ids(ds)
    assert np.isfinite(ds.inputs["dense"]).all() and np.abs(ds.inputs["dense"]).max() < 10
    assert set(np.unique(ds.label).tolist()) == {0.0, 1.0}
    assert 0.23 < ds.label.mean() < 0.27
    assert ds.meta["bayes_auc"] > 0.8  # the hidden model is far from random
    assert len(ds.meta["field_names"]) == 8


def test_synthetic_zipf_skew_and_popularity_permutation():
    ds = synthetic_ctr(n=100_000, seed=0)
    ids = ds.inputs["sparse"][:, 0]  # vocab 20000
    counts = np.bincount(ids, minlength=20000)
    top = np.sort(counts)[::-1]
    share_top1pct = top[:200].sum() / counts.sum()
    assert share_top1pct > 0.5, share_top1pct  # zipf 1.1: ~0.68 in theory
    assert (counts == 0).mean() > 0.3  # long tail: many ids never drawn in 100k rows
    popular = np.argsort(counts)[::-1][:200]
    assert len(np.intersect1d(popular, np.arange(200))) < 20  # popular ids are a random set, not 0..199
    flatter = synthetic_ctr(n=100_000, seed=0, zipf=0.5).inputs["sparse"][:, 0]
    c2 = np.sort(np.bincount(flatter, minlength=20000))[::-1]
    assert c2[:200].sum() / c2.sum() < share_top1pct


def test_synthetic_determinism():
    a, b = synthetic_ctr(n=5000, seed=7), synthetic_ctr(n=5000, seed=7)
    for k in a.inputs:
        assert np.array_equal(a.inputs[k], b.inputs[k])
    assert np.array_equal(a.label, b.label)
    c = synthetic_ctr(n=5000, seed=8)
    assert not np.array_equal(a.inputs["sparse"], c.inputs["sparse"])
    assert not np.array_equal(a.label, c.label)


def test_synthetic_multi_hot():
    ds = synthetic_ctr(n=20_000, seed=1, multi_hot=4, vocab_sizes=(1000, 50, 10))
    sp = ds.inputs["sparse"]
    assert sp.shape == (20_000, 3, 4) and sp.dtype == np.int64
    assert ds.meta["padding_id"] == 0
    assert ds.vocab["sparse"] == [1001, 51, 11]  # padding row included
    check_ids(ds)
    real = sp != 0
    n_real = real.sum(2)
    assert n_real.min() == 1 and n_real.max() == 4
    assert set(np.unique(n_real).tolist()) == {1, 2, 3, 4}
    # real ids come first, padding after
    assert np.array_equal(real, np.arange(4)[None, None, :] < n_real[..., None])
    assert sp[real].min() >= 1
    assert 0.2 < ds.label.mean() < 0.3


def test_synthetic_bad_args():
    with pytest.raises(DataError):
        synthetic_ctr(n=0)
    with pytest.raises(DataError, match="multi_hot"):
        synthetic_ctr(n=10, multi_hot=0)


# ----------------------------------------------------------------------------- npz


def test_npz_round_trip(tmp_path):
    ds = synthetic_ctr(n=2000, seed=3, multi_hot=2, vocab_sizes=(300, 20))
    path = save_npz(ds, tmp_path / "d.data")
    assert path == tmp_path / "d.data" and path.exists()
    back = load_npz(path)
    assert back.name == ds.name and back.task == "ctr"
    assert back.vocab == ds.vocab  # saved vocab, not max+1
    assert back.meta["vocab_inferred"] == []
    assert back.meta["padding_id"] == 0 and back.meta["field_names"] == ds.meta["field_names"]
    for k in ds.inputs:
        assert back.inputs[k].dtype == ds.inputs[k].dtype
        assert np.array_equal(back.inputs[k], ds.inputs[k])
    assert np.array_equal(back.label, ds.label)


def test_npz_user_file_vocab_inferred(tmp_path):
    p = tmp_path / "user.npz"
    np.savez(
        p,
        dense=np.random.default_rng(0).normal(size=(6, 2)),  # float64 -> float32
        sparse=np.array([[0, 1], [2, 1], [4, 0], [1, 1], [0, 7], [3, 2]], dtype=np.int32),
        user_id=np.array([5, 1, 2, 0, 0, 1]),
        label=np.array([0, 1, 1, 0, 1, 0], dtype=np.int8),
    )
    ds = load_npz(p)
    assert ds.vocab == {"sparse": [5, 8], "user_id": [6]}
    assert ds.meta["vocab_inferred"] == ["sparse", "user_id"]
    assert ds.inputs["dense"].dtype == np.float32 and ds.inputs["sparse"].dtype == np.int64
    assert ds.label.dtype == np.float32 and ds.label.tolist() == [0, 1, 1, 0, 1, 0]

    r = tmp_path / "pairs.npz"
    np.savez(r, user_id=np.array([0, 1, 2]), item_id=np.array([4, 0, 9]))
    rd = load_npz(r, task="retrieval")
    assert rd.task == "retrieval" and rd.label.tolist() == [1, 1, 1]
    assert rd.meta["num_items"] == 10 and rd.meta["num_users"] == 3


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"x": np.zeros(3)}, "no 'label'"),
        ({"x": np.zeros(3), "label": np.zeros(4)}, "same first dim"),
        ({"x": np.array([1, "a", None], dtype=object), "label": np.zeros(3)}, "object"),
        ({"x": np.zeros(3), "label": np.array([0.0, np.nan, 1.0])}, "NaN"),
        ({"x": np.zeros(3), "label": np.array([0, 2, 1])}, "0/1"),
        ({"x": np.zeros(3), "label": np.array([0, 0.5, 1])}, "0/1"),
        ({"x": np.array([0, -1, 2]), "label": np.zeros(3)}, "id -1"),
        ({"x": np.array(["a", "b", "c"]), "label": np.zeros(3)}, "dtype"),
        ({"label": np.zeros(3)}, "only 'label'"),
    ],
)
def test_npz_errors(tmp_path, arrays, match):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(DataError, match=match):
        load_npz(p)


def test_npz_missing_or_corrupt_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_npz(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(DataError, match="not a valid .npz"):
        load_npz(bad)


# ----------------------------------------------------------------------------- MovieLens


@pytest.fixture(scope="module")
def wheel():
    """The real RecBole wheel (downloaded from PyPI into the default cache unless already there)."""
    return recbole_wheel()


def test_recbole_wheel_download_and_cache(tmp_path, monkeypatch):
    path = recbole_wheel(tmp_path)  # real pip download into an empty folder
    assert path.parent == tmp_path and path.name.startswith("recbole-1.2.1-")
    names = zipfile.ZipFile(path).namelist()
    assert "recbole/dataset_example/ml-100k/ml-100k.inter" in names

    def no_pip(*a, **k):
        raise AssertionError("pip must not run when the wheel is cached")

    monkeypatch.setattr(ml.subprocess, "run", no_pip)
    assert recbole_wheel(tmp_path) == path
    monkeypatch.setenv("EDGECOMPRESS_CACHE", str(tmp_path))
    assert recbole_wheel() == path


def test_recbole_download_failure_is_data_error(tmp_path, monkeypatch):
    def failing(cmd, **k):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version (network down)")

    monkeypatch.setattr(ml.subprocess, "run", failing)
    with pytest.raises(DataError, match=r"pip download recbole==1\.2\.1.*network down.*pass path="):
        load_movielens(cache_dir=tmp_path / "empty")


def test_load_movielens_real(wheel):
    r = load_movielens(cache_dir=wheel.parent)
    assert len(r) == 100_000 and r.num_users == 943 and r.num_items == 1682
    assert r.user.min() == 0 and r.user.max() == 942 and len(np.unique(r.user)) == 943
    assert r.item.min() == 0 and r.item.max() == 1681
    assert r["rating"].min() == 1 and r["rating"].max() == 5
    assert r.meta["user_ids"][:3].tolist() == [1, 2, 3]  # raw ids sorted numerically
    # first line of ml-100k: user 196, item 242, rating 3, timestamp 881250949
    assert r.meta["user_ids"][r.user[0]] == 196 and r.meta["item_ids"][r.item[0]] == 242
    assert r.rating[0] == 3 and r.timestamp[0] == 881250949
    assert r.meta["side_files"] == ["item", "user"]
    uf, itf = r.user_features, r.item_features
    assert uf["age"][0] == 24 and r.meta["categories"]["gender"][uf["gender"][0]] == "M"
    assert r.meta["categories"]["occupation"][uf["occupation"][0]] == "technician"
    assert itf["release_year"][0] == 1995 and r.meta["categories"]["genre"][itf["genre"][0]] == "Animation"
    assert itf["genres"].shape == (1682, 19)


def test_movielens_ctr_real(wheel):
    ds = movielens_ctr(cache_dir=wheel.parent)
    assert ds.task == "ctr" and len(ds) == 100_000
    assert ds.meta["field_names"][:2] == ["user", "item"] and "genre" in ds.meta["field_names"]
    assert ds.inputs["sparse"].shape == (100_000, len(ds.meta["field_names"]))
    assert ds.inputs["dense"].dtype == np.float32 and ds.inputs["dense"].shape[1] >= 1
    assert np.isfinite(ds.inputs["dense"]).all()
    assert ds.vocab["sparse"][:2] == [943, 1682]
    check_ids(ds)
    assert ds.label.sum() == 55_375  # ratings >= 4 in ml-100k


def test_movielens_retrieval_real(wheel):
    rd = movielens_retrieval(cache_dir=wheel.parent)
    assert rd.num_users == 943 and rd.num_items == 1682
    assert len(rd.test_user) == 943 and len(rd.test_item) == 943
    assert np.array_equal(rd.test_user, np.arange(943))
    assert len(rd.train) == 100_000 - 943 and rd.train.task == "retrieval"
    assert set(rd.train.inputs) == {"user_id", "item_id"} and (rd.train.label == 1).all()
    assert rd.train.meta["num_items"] == 1682
    check_ids(rd.train)
    assert sum(len(x) for x in rd.train_items_by_user) == 100_000 - 943  # ml-100k has no repeats
    r = load_movielens(cache_dir=wheel.parent)
    for u in (0, 100, 942):
        ts = r.timestamp[r.user == u]
        test_row = np.flatnonzero((r.user == u) & (r.item == rd.test_item[u]))
        assert r.timestamp[test_row[0]] == ts.max()  # held-out = latest interaction
        assert rd.test_item[u] not in rd.train_items_by_user[u]


def test_movielens_inter_path_and_grouplens_udata(wheel, tmp_path):
    inter = tmp_path / "ml-100k.inter"
    inter.write_bytes(zipfile.ZipFile(wheel).read("recbole/dataset_example/ml-100k/ml-100k.inter"))
    r = load_movielens(inter)
    assert len(r) == 100_000 and r.num_users == 943 and r.meta["side_files"] == []
    ds = movielens_ctr(inter)
    assert ds.meta["field_names"] == ["user", "item"] and ds.inputs["dense"].shape[1] >= 1

    gl = tmp_path / "gl"
    gl.mkdir()
    (gl / "u.data").write_text("10\t7\t5\t100\n20\t7\t2\t50\n10\t3\t4\t300\n20\t9\t4\t60\n30\t9\t1\t1\n")
    (gl / "u.user").write_text("10|30|F|writer|02139\n20|45|M|other|94043\n")
    flags = ["0"] * 19
    flags[8] = "1"  # Drama
    (gl / "u.item").write_bytes(("7|Caf\xe9 (1995)|01-Jan-1995||http://x|" + "|".join(flags) + "\n").encode("latin-1"))
    for p in (gl / "u.data", gl):  # file or folder
        r = load_movielens(p)
        assert r.meta["user_ids"].tolist() == [10, 20, 30] and r.meta["item_ids"].tolist() == [3, 7, 9]
        assert r.user.tolist() == [0, 1, 0, 1, 2] and r.item.tolist() == [1, 1, 0, 2, 2]
        assert r.user_features["age"].tolist() == [30, 45, -1]
        assert r.meta["categories"]["gender"][r.user_features["gender"][0]] == "F"
        assert r.user_features["gender"][2] == 0  # user 30 has no side data
        assert r.item_features["release_year"][1] == 1995 and np.isnan(r.item_features["release_year"][0])
        assert r.meta["categories"]["genre"][r.item_features["genre"][1]] == "Drama"
    rd = movielens_retrieval(gl / "u.data")
    # user 10: items 7 (t=100), 3 (t=300) -> test 3; user 20: 7 (t=50), 9 (t=60) -> test 9; user 30: 1 rating, no test
    assert rd.test_user.tolist() == [0, 1] and rd.test_item.tolist() == [0, 2]
    assert [x.tolist() for x in rd.train_items_by_user] == [[1], [1], [2]]
    ds = movielens_ctr(gl / "u.data")
    assert ds.label.tolist() == [1, 0, 1, 1, 0]
    check_ids(ds)


def test_movielens_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist.*pass path="):
        load_movielens(tmp_path / "missing.data")
    with pytest.raises(DataError, match="neither u.data nor a .inter"):
        load_movielens(tmp_path)
    bad = tmp_path / "u.data"
    bad.write_text("1\t2\n3\t4\n")
    with pytest.raises(DataError, match="line 1 has 2 tab-separated"):
        load_movielens(bad)
    bad.write_text("1\t2\tgood\t5\n")
    with pytest.raises(DataError, match="not numeric"):
        load_movielens(bad)
    hdr = tmp_path / "x.inter"
    hdr.write_text("user_id:token\titem_id:token\tscore:float\n1\t2\t3\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['rating', 'timestamp'\]"):
        load_movielens(hdr)
    z = tmp_path / "other.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("readme.txt", "hi")
    with pytest.raises(DataError, match="no MovieLens ratings file"):
        load_movielens(z)
