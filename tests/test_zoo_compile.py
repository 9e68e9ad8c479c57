"""Every zoo model goes model -> compile -> bundle -> runtime, fp32 and int8,
with parity against the host and metrics measured through the runtime."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import edgecompress as ec
import edgecompress_runtime as ecr
from edgecompress.data import synthetic_ctr
from edgecompress.data.movielens import leave_last_out
from edgecompress.models.zoo import model_for_data
from edgecompress.passes import EmbeddingRowwiseQuant, LinearInt8Weights
from edgecompress.train import train


@pytest.fixture(scope="module")
def small_ctr():
    return synthetic_ctr(n=6000, vocab_sizes=(500, 300, 100), dense_dim=4, seed=7).split((0.7, 0.3))


@pytest.fixture(scope="module")
def multi_hot_ctr():
    return synthetic_ctr(n=4000, vocab_sizes=(400, 200, 50), dense_dim=3, multi_hot=3, seed=8).split((0.7, 0.3))


@pytest.fixture(scope="module")
def small_retrieval():
    rng = np.random.default_rng(0)
    n_users, n_items, n = 120, 200, 4000
    user = rng.integers(0, n_users, n)
    item = (user * 7 + rng.integers(0, 20, n)) % n_items      # users like item neighbourhoods
    return leave_last_out(user, item, rng.random(n), n_users, n_items)


CASES = [("dlrm", "small_ctr", {}), ("dlrm", "multi_hot_ctr", {}), ("deepfm", "small_ctr", {}),
         ("wide_deep", "small_ctr", {}), ("two_tower", "small_retrieval", {}), ("neumf", "small_retrieval", {})]


@pytest.mark.parametrize("name,data_fixture,kw", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_zoo_model_compiles_and_runs(name, data_fixture, kw, request, tmp_path):
    data = request.getfixturevalue(data_fixture)
    if isinstance(data, tuple):
        train_ds, eval_data = data
    else:
        train_ds, eval_data = data.train, data
    torch.manual_seed(0)
    model = model_for_data(name, train_ds, **kw)
    train(model, train_ds, epochs=1, batch_size=256, lr=3e-3, progress=False)

    fp32 = ec.compile(model, target="local", data=eval_data, output=tmp_path / "fp32.ecb", plan=[], progress=False)
    int8 = ec.compile(model, target="local", data=eval_data, output=tmp_path / "int8.ecb",
                      plan=[EmbeddingRowwiseQuant(bits=8), LinearInt8Weights()], progress=False)
    assert fp32.parity["max_abs_diff"] <= 1e-5
    assert int8.parity["max_abs_diff"] <= 1e-2
    # the fp32 bundle measures the same metrics as the torch model
    for k, v in fp32.metrics_before.items():
        assert fp32.metrics_after[k] == pytest.approx(v, abs=1e-4), k
    assert int8.size_bytes < 0.6 * fp32.size_bytes

    m = ecr.load(int8.path)
    assert m.backend == "numpy"
    ref_in, ref_out = m.reference()
    # a batch size the export never saw
    batch = {k: np.concatenate([v, v, v[:5]]) for k, v in ref_in.items()}
    host = model(**{k: torch.as_tensor(v) for k, v in batch.items()}).detach().numpy().reshape(-1)
    got = m.predict(batch)
    assert got.shape == host.shape
    assert np.abs(got - host).max() < 0.05      # int8 vs the fp32 source: quantization error only
    assert np.abs(ecr.load(fp32.path).predict(batch) - host).max() < 1e-5
