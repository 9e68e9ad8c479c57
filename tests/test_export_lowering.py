"""The export lowering of nn.EmbeddingBag (issue 4, item 2): ProgramModule runs
bags as embedding + sum (fixed bags, with padding) or embedding + segment
scatter-add (jagged bags with offsets). It must equal the original module, and
its exported graph must hold no embedding_bag (ExecuTorch cannot load
``aten::_embedding_bag.out``, litert-torch has no lowering for it)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgecompress.graph import lower
from edgecompress.graph.torch_exec import ProgramModule
from edgecompress.models.zoo import build_model


def _ops(ep) -> set[str]:
    return {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}


def _export(pm, args):
    batch = torch.export.Dim("batch", min=1, max=1024)
    return torch.export.export(pm, args, dynamic_shapes={"args": tuple({0: batch} for _ in args)})


ZOO = [("dlrm", {"vocab_sizes": [50, 30, 20], "dense_dim": 4}),
       ("dlrm", {"vocab_sizes": [50, 30, 20], "dense_dim": 4, "multi_hot": True}),
       ("deepfm", {"vocab_sizes": [50, 30, 20], "dense_dim": 4}),
       ("wide_deep", {"vocab_sizes": [50, 30, 20], "dense_dim": 4}),
       ("two_tower", {"num_users": 40, "num_items": 60}),
       ("neumf", {"num_users": 40, "num_items": 60})]


@pytest.mark.parametrize("name,kw", ZOO, ids=["dlrm", "dlrm-multi-hot", "deepfm", "wide_deep", "two_tower", "neumf"])
def test_program_module_equals_zoo_model_and_exports_without_bags(name, kw):
    torch.manual_seed(0)
    model = build_model(name, **kw).eval()
    g = torch.Generator().manual_seed(1)
    example = model.example_inputs(8, generator=g)
    names = list(model.input_names)
    program = lower(model, dict(zip(names, [t.numpy() for t in example])))
    pm = ProgramModule(program).eval()
    for batch in (1, 5, 33):
        args = model.example_inputs(batch, generator=g)
        with torch.no_grad():
            assert torch.allclose(pm(*args), model(*args), atol=1e-6)
    ep = _export(pm, tuple(example))
    ops = _ops(ep)
    assert not any("embedding_bag" in o for o in ops), ops
    had_bags = any(isinstance(m, nn.EmbeddingBag) for m in model.modules())
    if had_bags:
        assert any("embedding" in o for o in ops)
    args = model.example_inputs(13, generator=g)
    with torch.no_grad():
        assert torch.allclose(ep.module()(*args), model(*args), atol=1e-6)


class JaggedBags(nn.Module):
    """Jagged bags: flat ids + offsets (start of each bag), as TorchRec-style inputs."""

    def __init__(self, mode="sum", padding_idx=None):
        super().__init__()
        self.bag = nn.EmbeddingBag(50, 8, mode=mode, padding_idx=padding_idx)
        self.out = nn.Linear(8, 1)

    def forward(self, ids, offsets):
        return self.out(self.bag(ids, offsets)).squeeze(-1)


def _jagged(rng, bags):
    lengths = rng.integers(1, 5, bags)
    ids = torch.from_numpy(rng.integers(0, 50, int(lengths.sum())))
    offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)[:-1]]))
    return ids, offsets


@pytest.mark.parametrize("mode,pad", [("sum", None), ("mean", None), ("sum", 0)])
def test_jagged_bags_become_segment_scatter_add(mode, pad):
    torch.manual_seed(0)
    model = JaggedBags(mode, pad).eval()
    # lowered on one-id bags (the lowering shares one dynamic dim across inputs);
    # the op graph itself has no shape constraint, so any jagged batch runs
    program = lower(model, {"ids": np.arange(6, dtype=np.int64), "offsets": np.arange(6, dtype=np.int64)})
    assert [n["op"] for n in program.graph["nodes"]].count("embedding_bag_offsets") == 1
    pm = ProgramModule(program).eval()
    rng = np.random.default_rng(0)
    for bags in (1, 4, 17):
        ids, offsets = _jagged(rng, bags)
        with torch.no_grad():
            assert torch.allclose(pm(ids, offsets), model(ids, offsets), atol=1e-6)


def test_jagged_bags_run_in_executorch_with_dynamic_sizes():
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    torch.manual_seed(0)
    model = JaggedBags().eval()
    program = lower(model, {"ids": np.arange(6, dtype=np.int64), "offsets": np.arange(6, dtype=np.int64)})
    pm = ProgramModule(program).eval()
    rng = np.random.default_rng(1)
    ids, offsets = _jagged(rng, 5)
    # torch.export specialises the 0/1 sizes of offsets[1:], hence at least 3 bags per call
    n, b = torch.export.Dim("n", min=3, max=4096), torch.export.Dim("b", min=3, max=1024)
    ep = torch.export.export(pm, (ids, offsets), dynamic_shapes={"args": ({0: n}, {0: b})})
    assert not any("embedding_bag" in o for o in _ops(ep))
    et = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()
    method = Runtime.get().load_program(et.buffer).load_method("forward")
    for bags in (3, 9, 40):
        ids, offsets = _jagged(rng, bags)
        got = method.execute([ids, offsets])[0]
        with torch.no_grad():
            assert torch.allclose(got, model(ids, offsets), atol=1e-5)
