"""Shared fixtures: a small trained DLRM and its fp32 / int8 bundles, built once."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

# compile() adds every installed app format by default; only tests/test_export_*.py
# (which pass formats=...) should pay for ExecuTorch / LiteRT exports
os.environ.setdefault("EDGECOMPRESS_FORMATS", "numpy")
# latency tables calibrated on this machine (edgecompress calibrate) must not change what the
# planner picks in tests: an empty directory of tables unless a test sets its own
if "EDGECOMPRESS_LATENCY_DIR" not in os.environ:
    import tempfile
    os.environ["EDGECOMPRESS_LATENCY_DIR"] = os.path.join(tempfile.mkdtemp(prefix="ec-test-latency-"), "latency")


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
    from edgecompress.passes import DEFAULT_PLAN
    _, test_ds = ctr_data
    out = tmp_path_factory.mktemp("bundles")
    fp32 = ec.compile(trained_dlrm, target="local", data=test_ds, output=out / "fp32.ecb", plan=[], progress=False)
    int8 = ec.compile(trained_dlrm, target="local", data=test_ds, output=out / "int8.ecb",
                      plan=list(DEFAULT_PLAN), progress=False)
    return {"fp32": fp32, "int8": int8}


@pytest.fixture()
def rng():
    return np.random.default_rng(0)


# Real OpenSSH boards (sshd in network namespaces) for the deploy tests: see tests/boards.py.
from boards import (_isolated_signing_keys, _pinned_runtime_wheel, board, board_factory,  # noqa: E402,F401
                    deploy_bundles, installed_board, sshd)
