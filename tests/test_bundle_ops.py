"""The bare-name ops (the first table of docs/ops.md) against torch.

Each case is a small forward() whose lowered graph uses the op; the graph runs on the
numpy runtime and must equal torch on the same inputs, including broadcasting, negative
dims and an empty batch. Ops that lowering no longer emits (kept for older bundles and
the calibration probes) are called directly. A last test checks every bare op is covered."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgecompress.graph import lower
from edgecompress_runtime.backends.numpy_graph import GraphExecutor
from edgecompress_runtime.ops import OPS

R = np.random.default_rng(0)
X = R.standard_normal((6, 4, 3)).astype(np.float32)
P = (R.random((6, 4)) + 0.1).astype(np.float32)
IDS = R.integers(0, 20, (6, 3))


class Fn(nn.Module):
    def __init__(self, fn, tables=False):
        super().__init__()
        self.fn = fn
        if tables:
            self.emb = nn.Embedding(20, 3)
            self.bag = nn.EmbeddingBag(20, 3, mode="mean", padding_idx=0)
            self.lin = nn.Linear(3, 2)

    def forward(self, x, p, ids):
        return self.fn(self, x, p, ids)


CASES = {
    "add": lambda m, x, p, i: x + p.unsqueeze(-1) * 2.5 + 1,
    "sub": lambda m, x, p, i: x - p[:, :1, None] - 0.5,
    "mul": lambda m, x, p, i: x * p.unsqueeze(-1) * 3,
    "div": lambda m, x, p, i: torch.div(x, p.unsqueeze(-1)) + torch.div(i, 3, rounding_mode="floor"
                                                                         ).float().sum(-1)[:, None, None],
    "neg": lambda m, x, p, i: -x,
    "pow": lambda m, x, p, i: p ** 3,
    "relu": lambda m, x, p, i: torch.relu(x),
    "sigmoid": lambda m, x, p, i: torch.sigmoid(x * 20),
    "tanh": lambda m, x, p, i: torch.tanh(x),
    "exp": lambda m, x, p, i: torch.exp(x),
    "log": lambda m, x, p, i: torch.log(p),
    "sqrt": lambda m, x, p, i: torch.sqrt(p),
    "rsqrt": lambda m, x, p, i: torch.rsqrt(p),
    "clamp": lambda m, x, p, i: torch.clamp(x, -0.5, 0.7),
    "sum": lambda m, x, p, i: x.sum(-2) + x.sum((0, 2), keepdim=True).mean(),
    "mean": lambda m, x, p, i: x.mean(1, keepdim=True),
    "amax": lambda m, x, p, i: x.amax(-1),
    "vector_norm": lambda m, x, p, i: torch.linalg.vector_norm(x, dim=-1),
    "softmax": lambda m, x, p, i: torch.softmax(x, dim=1),
    "bmm": lambda m, x, p, i: torch.bmm(x, x.transpose(1, 2)),
    "matmul": lambda m, x, p, i: p @ torch.ones(4, 5),
    "reshape": lambda m, x, p, i: x.reshape(x.shape[0], -1),
    "squeeze": lambda m, x, p, i: x[:, :1].squeeze(1),
    "unsqueeze": lambda m, x, p, i: p.unsqueeze(-1),
    "permute": lambda m, x, p, i: x.permute(2, 0, 1),
    "expand": lambda m, x, p, i: p[:, :1].expand(-1, 7),
    "cat": lambda m, x, p, i: torch.cat([x, x * 2], -1),
    "slice": lambda m, x, p, i: x[:, 1:3, ::2],
    "select": lambda m, x, p, i: x[:, -1],
    "index": lambda m, x, p, i: x[:, torch.tensor([0, 2]), torch.tensor([1, 0])],
    "size": lambda m, x, p, i: x.reshape(x.shape[0] * 2, -1),
    "arange": lambda m, x, p, i: p + torch.arange(x.shape[0]).unsqueeze(-1),
    "to": lambda m, x, p, i: p + i[:, :1].float(),
    "identity": lambda m, x, p, i: torch.nn.functional.dropout(x.contiguous(), 0.5, training=False),
    "getitem": lambda m, x, p, i: x.max(1).values,
    "embedding": lambda m, x, p, i: m.lin(m.emb(i)),
    "embedding_bag": lambda m, x, p, i: m.bag(i),
    "linear": lambda m, x, p, i: m.lin(x),
}
# never emitted by today's lowering (decomposition rewrites them: stack -> unsqueeze + cat, clamp_min -> clamp),
# still in older bundles and calibration probes
DIRECT = {
    "expand_as": (lambda a, b: torch.ones(1, 3).expand_as(b), [np.ones((1, 3), np.float32), X[:, 0]]),
    "flatten": (lambda a: torch.flatten(a, 1), [X]),
    "transpose": (lambda a: a.transpose(0, -1), [X]),
    "unbind": (lambda a: a.unbind(1)[2], [X]),
    "floordiv": (lambda a: a // 3, [IDS]),
    "numel": (lambda a: a.numel(), [X]),
    "clamp_min": (lambda a: torch.clamp_min(a, 0.1), [X]),
    "stack": (lambda a, b: torch.stack([a, b], 1), [P, P + 1]),
}
DIRECT_ARGS = {"expand_as": lambda a, b: OPS["expand_as"](a, b), "flatten": lambda a: OPS["flatten"](a, 1),
               "transpose": lambda a: OPS["transpose"](a, 0, -1), "unbind": lambda a: OPS["unbind"](a, 1)[2],
               "floordiv": lambda a: OPS["floordiv"](a, 3), "numel": lambda a: OPS["numel"](a),
               "clamp_min": lambda a: OPS["clamp_min"](a, 0.1), "stack": lambda a, b: OPS["stack"]([a, b], 1)}
SKIPPED = {"embedding_bag_offsets": "tests/test_lowering_passes.py::test_jagged_bags_with_offsets_run"}


def _run(name, rows):
    torch.manual_seed(0)
    model = Fn(CASES[name], tables=name.startswith(("embedding", "linear"))).eval()
    if name == "linear":
        model.fn = lambda m, x, p, i: m.lin(x)
    feeds = {"x": X[:rows], "p": P[:rows], "ids": IDS[:rows]}
    prog = lower(model, {"x": X, "p": P, "ids": IDS})
    params = {k: v.to_runtime(k) for k, v in prog.params.items()}
    got = GraphExecutor(prog.graph, params, prog.constants).run(feeds)
    with torch.no_grad():
        want = model(*[torch.as_tensor(feeds[k]) for k in ("x", "p", "ids")])
    return prog, np.asarray(got), want.numpy()


@pytest.mark.parametrize("name", sorted(CASES))
def test_bare_op_matches_torch(name):
    for rows in (6, 1):
        prog, got, want = _run(name, rows)
        assert name in {n["op"] for n in prog.graph["nodes"]}, [n["op"] for n in prog.graph["nodes"]]
        assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape, got.dtype, want.dtype)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(DIRECT))
def test_bare_op_called_directly_matches_torch(name):
    fn, args = DIRECT[name]
    want = fn(*[torch.as_tensor(a) for a in args])
    got = DIRECT_ARGS[name](*args)
    want = want.numpy() if isinstance(want, torch.Tensor) else want
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_every_bare_op_is_covered():
    bare = {k for k in OPS if "." not in k}
    assert bare == set(CASES) | set(DIRECT) | set(SKIPPED), bare ^ (set(CASES) | set(DIRECT) | set(SKIPPED))
