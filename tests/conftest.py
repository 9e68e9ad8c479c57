"""Shared fixtures: a small trained DLRM and its fp32 / int8 bundles, built once."""
from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def ctr_data():
    from edgecompress.data import synthetic_ctr
    data = synthetic_ctr(n=30_000, vocab_sizes=(3000, 2000, 1000, 500, 100), dense_dim=6, seed=3)
    return data.split((0.8, 0.2), seed=0)


@pytest.fixture(scope="session")
def trained_dlrm(ctr_data):
    from edgecompress.models.zoo import model_for_data
    from edgecompress.train import train
    train_ds, _ = ctr_data
    torch.manual_seed(0)
    model = model_for_data("dlrm", train_ds, embedding_dim=32, bottom_mlp=(32,), top_mlp=(32,))
    train(model, train_ds, epochs=2, batch_size=512, lr=3e-3, progress=False)
    return model


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, trained_dlrm, ctr_data):
    import edgecompress as ec
    _, test_ds = ctr_data
    out = tmp_path_factory.mktemp("bundles")
    fp32 = ec.compile(trained_dlrm, target="local", data=test_ds, output=out / "fp32.ecb", plan=[], progress=False)
    int8 = ec.compile(trained_dlrm, target="local", data=test_ds, output=out / "int8.ecb", progress=False)
    return {"fp32": fp32, "int8": int8}


@pytest.fixture()
def rng():
    return np.random.default_rng(0)
