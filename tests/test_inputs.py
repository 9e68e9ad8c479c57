"""Bad input to predict() is a ValueError naming the field; the caller's arrays are never changed."""
from __future__ import annotations

import numpy as np
import pytest

import edgecompress_runtime as ecr
from edgecompress_runtime.inputs import validate


@pytest.fixture(scope="module")
def model(bundles):
    return ecr.load(bundles["int8"].path)


@pytest.fixture()
def good(model):
    inputs, _ = model.reference()
    return {k: v[:8].copy() for k, v in inputs.items()}


def test_spec_vocab_comes_from_the_tables(model, trained_dlrm):
    spec = {s["name"]: s for s in model.input_spec}
    assert spec["dense"]["dtype"] == "float32" and spec["dense"]["shape"] == [None, 6]
    assert spec["sparse"]["shape"] == [None, 5]
    rows = [e.num_embeddings for e in trained_dlrm.embeddings] if hasattr(trained_dlrm, "embeddings") else None
    assert spec["sparse"]["vocab"] == (rows or [3000, 2000, 1000, 500, 100])


def test_good_input_predicts(model, good):
    out = model.predict(good)
    assert out.shape == (8,) and out.dtype == np.float32 and np.isfinite(out).all()


def test_missing_input(model, good):
    del good["dense"]
    with pytest.raises(ValueError, match="missing input 'dense'"):
        model.predict(good)


def test_unknown_input(model, good):
    good["extra"] = good["dense"]
    with pytest.raises(ValueError, match="unknown input 'extra'"):
        model.predict(good)


def test_wrong_dtype(model, good):
    good["sparse"] = good["sparse"].astype(np.float32)
    with pytest.raises(ValueError, match="'sparse' must hold integer ids"):
        model.predict(good)
    good["sparse"] = good["sparse"].astype(np.int64)
    good["dense"] = good["dense"].astype(np.int32)
    with pytest.raises(ValueError, match="'dense' must be float32"):
        model.predict(good)


def test_int32_ids_and_float64_dense_are_accepted(model, good):
    want = model.predict(good)
    got = model.predict({"dense": good["dense"].astype(np.float64), "sparse": good["sparse"].astype(np.int32)})
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_wrong_shape(model, good):
    good["dense"] = good["dense"][:, :3]
    with pytest.raises(ValueError, match=r"'dense' has shape \[8, 3\]; expected \[B, 6\]"):
        model.predict(good)


def test_mismatched_batch(model, good):
    good["dense"] = good["dense"][:5]
    with pytest.raises(ValueError, match="batch size"):
        model.predict(good)


def test_negative_id_names_the_field(model, good):
    good["sparse"][3, 2] = -1
    before = good["sparse"].copy()
    with pytest.raises(ValueError, match=r"sparse\[field .*\]: negative id -1"):
        model.predict(good)
    np.testing.assert_array_equal(good["sparse"], before)


def test_out_of_vocabulary_id_names_the_field(model, good):
    good["sparse"][0, 4] = 100
    with pytest.raises(ValueError, match=r"out-of-vocabulary id 100 .*valid ids are 0\.\.99"):
        model.predict(good)


def test_nan_in_dense(model, good):
    good["dense"][2, 4] = np.nan
    with pytest.raises(ValueError, match="'dense' column 4: 1 NaN"):
        model.predict(good)


def test_inputs_numpy_misreads_get_the_real_problem_named(model, good):
    from edgecompress_runtime.errors import InputError
    huge = good["sparse"].astype(np.uint64)
    huge[1, 0] = np.iinfo(np.uint64).max                      # not "negative id -1" after a cast
    with pytest.raises(InputError, match=r"'sparse': id 18446744073709551615 is larger than any table"):
        model.predict(dict(good, sparse=huge))
    big = good["dense"].astype(np.float64)
    big[0, 2] = 1e300                                         # finite: not "NaN or infinite"
    with pytest.raises(InputError, match=r"'dense': value 1e\+300 is finite but outside float32's range"):
        model.predict(dict(good, dense=big))
    ragged = [list(r) for r in good["dense"]]
    ragged[3] = ragged[3][:-1]
    with pytest.raises(InputError, match=r"'dense' is not a rectangular array"):
        model.predict(dict(good, dense=ragged))
    assert model.predict(dict(good, dense=good["dense"].astype(np.float64))).shape == (8,)


def test_declared_oov_row_is_used_and_counted():
    specs = [{"name": "ids", "dtype": "int64", "shape": [None, 2], "kind": "ids", "vocab": [10, 5],
              "fields": ["user", "item"], "oov_row": [0, None]}]
    ids = np.array([[3, 1], [12, 2], [-4, 4]])
    counters = {}
    out = validate(specs, {"ids": ids}, counters)
    np.testing.assert_array_equal(out["ids"][:, 0], [3, 0, 0])
    assert counters == {"ids[field user]": 2}
    np.testing.assert_array_equal(ids[:, 0], [3, 12, -4])   # caller's array untouched
    with pytest.raises(ValueError, match=r"ids\[field item\]: out-of-vocabulary id 7"):
        validate(specs, {"ids": np.array([[1, 7]])})


def test_oov_rows_through_compile(trained_dlrm, ctr_data, tmp_path):
    import edgecompress as ec
    _, test_ds = ctr_data
    res = ec.compile(trained_dlrm, target="local", data=test_ds.take(np.arange(500)), output=tmp_path / "oov.ecb",
                     oov_rows={"sparse": 0}, plan=[], progress=False)
    m = ecr.load(res.path)
    inputs, _ = m.reference()
    batch = {k: v[:4].copy() for k, v in inputs.items()}
    batch["sparse"][1, 3] = 10**6
    out = m.predict(batch)
    assert np.isfinite(out).all()
    assert sum(m.stats["oov"].values()) == 1


def test_topk_ranks_candidates(model, good):
    query = {k: v[:1] for k, v in good.items()}
    cands = np.tile(good["sparse"][:1], (50, 1))
    cands[:, 0] = np.arange(50)
    top, scores = model.topk(query, {"sparse": cands}, k=5)
    full = model.predict({"dense": np.repeat(query["dense"], 50, 0), "sparse": cands})
    np.testing.assert_array_equal(top, np.argsort(-full, kind="stable")[:5])
    assert np.all(np.diff(scores) <= 0)
    with pytest.raises(ValueError, match="batch size 1"):
        model.topk(good, {"sparse": cands})
