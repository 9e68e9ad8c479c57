"""Model zoo: forward shapes, torch.export with a dynamic batch, the exported op set,
multi-hot padding, and the zoo helpers (build_model / model_for_data)."""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
import torch

from edgecompress.errors import DataError
from edgecompress.models import (
    DLRM, PADDING_ID, ZOO, DeepFM, ModelError, NeuMF, TwoTower, WideDeep, batch_dynamic_shapes,
    build_model, export_model, model_for_data,
)

VOCAB = [7, 11, 5, 19]
DENSE_DIM = 6

# name -> (zoo name, build_model kwargs)
CONFIGS = {
    "dlrm": ("dlrm", dict(vocab_sizes=VOCAB, dense_dim=DENSE_DIM, embedding_dim=8,
                          bottom_mlp=(16,), top_mlp=(16, 8))),
    "dlrm_multi_hot": ("dlrm", dict(vocab_sizes=VOCAB, dense_dim=DENSE_DIM, embedding_dim=8,
                                    bottom_mlp=(16,), top_mlp=(16, 8), multi_hot=True)),
    "deepfm": ("deepfm", dict(vocab_sizes=VOCAB, dense_dim=DENSE_DIM, embedding_dim=8, hidden=(16, 8))),
    "wide_deep": ("wide_deep", dict(vocab_sizes=VOCAB, dense_dim=DENSE_DIM, embedding_dim=8, hidden=(16, 8))),
    "two_tower": ("two_tower", dict(num_users=23, num_items=31, embedding_dim=8, tower=(16, 8))),
    "neumf": ("neumf", dict(num_users=23, num_items=31, mf_dim=8, mlp=(16, 8, 4))),
}

# The ATen op set of each exported graph (torch.export.export, dynamic batch, no
# run_decompositions). This is the contract the lowering has to support; if a torch
# upgrade changes it, this test says exactly how.
_COMMON = {"aten.linear.default", "aten.relu.default", "aten.squeeze.dim", "aten.cat.default"}
_BAG = {"aten.embedding_bag.padding_idx", "aten.arange.start_step", "aten.sym_size.int",
        "aten.reshape.default", "<built-in function getitem>"}
_DOT_INTERACTION = {"aten.stack.default", "aten.transpose.int", "aten.bmm.default", "aten.select.int",
                    "aten.index.Tensor"}
EXPECTED_OPS = {
    "dlrm": _COMMON | _BAG | _DOT_INTERACTION | {"aten.slice.Tensor"},
    "dlrm_multi_hot": _COMMON | _BAG | _DOT_INTERACTION | {"<built-in function mul>"},
    "deepfm": _COMMON | {"aten.embedding.default", "aten.select.int", "aten.stack.default",
                         "aten.sum.dim_IntList", "aten.mul.Tensor", "aten.sub.Tensor", "aten.add.Tensor"},
    "wide_deep": _COMMON | {"aten.embedding.default", "aten.select.int", "aten.sum.dim_IntList",
                            "aten.add.Tensor"},
    "two_tower": (_BAG | {"aten.linear.default", "aten.relu.default", "aten.embedding.default",
                          "aten.unsqueeze.default", "aten.mul.Tensor", "aten.sum.dim_IntList"}),
    "neumf": _COMMON | {"aten.embedding.default", "aten.mul.Tensor"},
}


def _build(key: str) -> torch.nn.Module:
    name, kw = CONFIGS[key]
    torch.manual_seed(0)
    return build_model(name, **kw).eval()


def _inputs(model, batch: int, seed: int = 1):
    return model.example_inputs(batch, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def exported():
    """key -> (model, ExportedProgram); exported once per test module."""
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key in CONFIGS:
            model = _build(key)
            batch = torch.export.Dim("batch", min=1, max=65536)
            dynamic_shapes = tuple({0: batch} for _ in model.input_names)
            out[key] = model, torch.export.export(model, _inputs(model, 4), dynamic_shapes=dynamic_shapes)
    return out


def _ops(ep) -> set[str]:
    return {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}


def test_zoo_registry():
    assert set(ZOO) == {"dlrm", "deepfm", "wide_deep", "two_tower", "neumf"}
    assert ZOO["dlrm"] is DLRM and ZOO["deepfm"] is DeepFM and ZOO["wide_deep"] is WideDeep
    assert ZOO["two_tower"] is TwoTower and ZOO["neumf"] is NeuMF
    for cls in ZOO.values():
        assert cls.task in ("ctr", "retrieval")
        assert cls.output in ("logit", "score")
        expected = ("dense", "sparse") if cls.task == "ctr" else ("user_id", "item_id")
        assert cls.input_names == expected


@pytest.mark.parametrize("key", list(CONFIGS))
@pytest.mark.parametrize("batch", [1, 7])
def test_forward_shape(key, batch):
    model = _build(key)
    args = _inputs(model, batch)
    if model.task == "ctr":
        assert args[0].dtype == torch.float32 and args[0].shape == (batch, DENSE_DIM)
        assert args[1].dtype == torch.int64
        assert args[1].shape[:2] == (batch, len(VOCAB))
    else:
        assert all(a.dtype == torch.int64 and a.shape == (batch,) for a in args)
    with torch.no_grad():
        out = model(*args)
    assert out.shape == (batch,)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("key", list(CONFIGS))
def test_export_dynamic_batch_matches_eager(key, exported):
    model, ep = exported[key]
    (sym,) = ep.range_constraints.values()  # one symbol: the batch
    assert (sym.lower, sym.upper) == (1, 65536)
    runner = ep.module()
    for batch in (1, 13, 300):
        args = _inputs(model, batch, seed=batch)
        with torch.no_grad():
            want = model(*args)
            got = runner(*args)
        assert got.shape == (batch,)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("key", list(CONFIGS))
def test_exported_op_set(key, exported):
    _, ep = exported[key]
    ops = _ops(ep)
    print(f"\n{key}: {sorted(ops)}")
    assert ops == EXPECTED_OPS[key], (
        f"op set changed: new {sorted(ops - EXPECTED_OPS[key])}, gone {sorted(EXPECTED_OPS[key] - ops)}")


def test_batch_dynamic_shapes_and_export_model():
    model = _build("neumf")
    shapes = batch_dynamic_shapes(model, max_batch=1024)
    assert set(shapes) == {"user_id", "item_id"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = export_model(model, max_batch=1024)
    (sym,) = ep.range_constraints.values()
    assert (sym.lower, sym.upper) == (1, 1024)
    args = _inputs(model, 9)
    torch.testing.assert_close(ep.module()(*args), model(*args))


def test_dlrm_triu_buffer_not_in_state_dict():
    model = _build("dlrm")
    n = len(VOCAB) + 1
    assert model.triu_idx.shape == (2, n * (n - 1) // 2)
    assert "triu_idx" not in model.state_dict()


# --------------------------------------------------------------------------- multi-hot padding


def test_multi_hot_padding_does_not_contribute(exported):
    original, ep = exported["dlrm_multi_hot"]
    model = DLRM(**original.config).eval()
    model.load_state_dict(original.state_dict())
    dense, sparse = _inputs(model, 8)
    sparse = sparse.clone()
    sparse[:, :, -1] = PADDING_ID  # at least one padding slot in every bag
    sparse[0, :, :] = PADDING_ID  # row 0: all bags empty
    with torch.no_grad():
        base = model(dense, sparse)
        torch.testing.assert_close(ep.module()(dense, sparse), base, rtol=1e-5, atol=1e-6)
        # Same bags with the padding moved to the front: same result.
        torch.testing.assert_close(model(dense, sparse.flip(-1)), base, rtol=1e-5, atol=1e-6)
        # Same bags with two extra padding columns: same result.
        wider = torch.cat([sparse, torch.zeros_like(sparse[:, :, :2])], dim=2)
        torch.testing.assert_close(model(dense, wider), base, rtol=1e-5, atol=1e-6)
        # The padding row is skipped, not just zero: make it large, eager and exported agree.
        for bag in model.embeddings:
            bag.weight[PADDING_ID].fill_(1e3)
        torch.testing.assert_close(model(dense, sparse), base, rtol=1e-5, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep_poisoned = export_model(model)
    with torch.no_grad():
        torch.testing.assert_close(ep_poisoned.module()(dense, sparse), base, rtol=1e-5, atol=1e-6)


def test_multi_hot_bag_is_sum_of_rows():
    torch.manual_seed(0)
    model = DLRM([10, 10], dense_dim=3, embedding_dim=4, multi_hot=True).eval()
    bag = model.embeddings[0]
    ids = torch.tensor([[3, 5, 0], [0, 0, 0], [9, 9, 2]])
    with torch.no_grad():
        got = bag(ids)
        w = bag.weight
        want = torch.stack([w[3] + w[5], torch.zeros(4), 2 * w[9] + w[2]])
    torch.testing.assert_close(got, want)


def test_multi_hot_requires_vocab_of_two():
    with pytest.raises(ValueError, match="padding"):
        DLRM([1, 5], dense_dim=3, multi_hot=True)


# --------------------------------------------------------------------------- model details


def test_two_tower_embeddings_give_the_score():
    model = _build("two_tower")
    user_id, item_id = _inputs(model, 5)
    with torch.no_grad():
        u = model.user_embedding(user_id)
        v = model.item_embedding(item_id)
        assert u.shape == v.shape == (5, model.output_dim)
        torch.testing.assert_close(model(user_id, item_id), (u * v).sum(dim=1))


@pytest.mark.parametrize("key", list(CONFIGS))
def test_config_rebuilds_same_architecture(key):
    model = _build(key)
    clone = type(model)(**model.config)
    assert {k: v.shape for k, v in clone.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()}
    clone.load_state_dict(model.state_dict())


@pytest.mark.parametrize("bad", [
    dict(vocab_sizes=[], dense_dim=3),
    dict(vocab_sizes=[5, 0], dense_dim=3),
    dict(vocab_sizes=[5, 6], dense_dim=0),
    dict(vocab_sizes=[5, 6], dense_dim=True),
    dict(vocab_sizes=[5, 6], dense_dim=3, embedding_dim=-2),
])
def test_bad_sizes_rejected(bad):
    with pytest.raises(ValueError):
        DLRM(**bad)
    with pytest.raises(ModelError):
        build_model("deepfm", **bad)


def test_neumf_mlp_first_layer_must_be_even():
    with pytest.raises(ValueError, match="even"):
        NeuMF(10, 10, mlp=(15, 8))


# --------------------------------------------------------------------------- zoo helpers


def test_build_model_errors():
    with pytest.raises(ModelError, match="available: deepfm, dlrm, neumf, two_tower, wide_deep"):
        build_model("dlrmm", vocab_sizes=[3], dense_dim=2)
    with pytest.raises(ModelError, match="dense_dim"):
        build_model("dlrm", vocab_sizes=[3])
    with pytest.raises(ModelError, match="num_users and num_items"):
        build_model("neumf")
    with pytest.raises(ModelError, match="does not take vocab_sizes"):
        build_model("two_tower", num_users=3, num_items=4, vocab_sizes=[3])
    with pytest.raises(ModelError, match="unknown argument.*hiden.*accepts.*hidden"):
        build_model("deepfm", vocab_sizes=[3], dense_dim=2, hiden=(4,))


def _dataset(task, vocab, **inputs):
    return types.SimpleNamespace(task=task, vocab=vocab, inputs=inputs)


def test_model_for_data_ctr():
    n = 20
    rng = np.random.default_rng(0)
    ds = _dataset("ctr", {"sparse": VOCAB},
                  dense=rng.normal(size=(n, DENSE_DIM)).astype(np.float32),
                  sparse=np.stack([rng.integers(0, v, n) for v in VOCAB], axis=1),
                  label=rng.integers(0, 2, n).astype(np.float32))
    for name in ("dlrm", "deepfm", "wide_deep"):
        model = model_for_data(name, ds, embedding_dim=4)
        assert model.config["vocab_sizes"] == VOCAB and model.config["dense_dim"] == DENSE_DIM
        out = model(torch.from_numpy(ds.inputs["dense"]), torch.from_numpy(ds.inputs["sparse"]))
        assert out.shape == (n,)
        assert not model.config.get("multi_hot", False)


def test_model_for_data_multi_hot():
    n, bag = 10, 3
    rng = np.random.default_rng(0)
    sparse = np.stack([rng.integers(0, v, (n, bag)) for v in VOCAB], axis=1)
    ds = _dataset("ctr", {"sparse": VOCAB}, dense=np.zeros((n, DENSE_DIM), np.float32), sparse=sparse)
    model = model_for_data("dlrm", ds)
    assert model.multi_hot
    assert model(torch.from_numpy(ds.inputs["dense"]), torch.from_numpy(sparse)).shape == (n,)
    with pytest.raises(DataError, match="multi-hot"):
        model_for_data("deepfm", ds)


def test_model_for_data_retrieval():
    ds = _dataset("retrieval", {"user_id": [943], "item_id": [1682]},
                  user_id=np.arange(5), item_id=np.arange(5))
    for name in ("two_tower", "neumf"):
        model = model_for_data(name, ds)
        assert (model.num_users, model.num_items) == (943, 1682)
        assert model(torch.arange(5), torch.arange(5)).shape == (5,)


def test_model_for_data_errors():
    ctr = _dataset("ctr", {"sparse": [3, 4]}, dense=np.zeros((2, 3), np.float32), sparse=np.zeros((2, 2), np.int64))
    with pytest.raises(DataError, match="retrieval model but the data set's task is 'ctr'"):
        model_for_data("neumf", ctr)
    with pytest.raises(ModelError, match="unknown model"):
        model_for_data("nope", ctr)
    bad_fields = _dataset("ctr", {"sparse": [3, 4, 5]}, dense=np.zeros((2, 3), np.float32),
                          sparse=np.zeros((2, 2), np.int64))
    with pytest.raises(DataError, match="2 fields but vocab"):
        model_for_data("dlrm", bad_fields)
    no_dense = _dataset("ctr", {"sparse": [3, 4]}, sparse=np.zeros((2, 2), np.int64))
    with pytest.raises(DataError, match="needs input.*dense"):
        model_for_data("deepfm", no_dense)
    retr = _dataset("retrieval", {"user_id": [3]}, user_id=np.zeros(2), item_id=np.zeros(2))
    with pytest.raises(DataError, match="item_id"):
        model_for_data("two_tower", retr)
