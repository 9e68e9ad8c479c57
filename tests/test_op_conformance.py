"""The Core ATen numpy ops (runtime/edgecompress_runtime/aten/) against torch.ops.aten.

Every op in OPS whose name has a "." is an ATen overload: each is one test here, running
hand-written cases (broadcasting, negative dims, empty batches, dtype promotion, 0-d
tensors) plus the ATen calls PyTorch's own OpInfo samples make (captured with a dispatch
mode, float32 / int64 / bool only). Each case calls the overload with every schema argument
(defaults filled in, as a bundle node carries them) on both sides and compares values,
dtype and shape, and that the numpy op left its inputs unchanged.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgecompress.graph.aten import op_name, overload, schema_args, split_args, to_json_value
from edgecompress_runtime.ops import OPS

# numpy warnings (0/0, log of 0, empty means) would be noise on devices: ops silence them
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

ATEN_OPS = sorted(n for n in OPS if "." in n)
RTOL, ATOL = 1e-5, 1e-5
ALLOWED = (torch.float32, torch.int64, torch.bool)
MAX_HARVESTED = 40          # OpInfo cases kept per op: enough variety, bounded time

_g = torch.Generator().manual_seed(0)


def F(*shape):
    return torch.randn(shape, generator=_g)


def P(*shape):                      # positive floats
    return torch.rand(shape, generator=_g) + 0.1


def I(*shape, lo=-6, hi=7):        # noqa: E743
    return torch.randint(lo, hi, shape, generator=_g)


def NZ(*shape):                     # nonzero ints (integer division by zero raises in torch)
    x = I(*shape)
    return torch.where(x == 0, torch.ones_like(x), x)


def B(*shape):
    return torch.rand(shape, generator=_g) > 0.5


def S(v):                           # 0-d tensor
    return torch.tensor(v)


def c(*args, **kwargs):
    return args, kwargs


def _with_nan(x):
    x = x.clone()
    x.view(-1)[::3] = float("nan")
    return x


# --- hand-written cases ---------------------------------------------------------

def _binary_cases(int_ok=True, bool_ok=True, nonzero=False, py_scalars=False):
    """(Tensor, Tensor) calls: same shape, broadcasting, promotion, 0-d, empty batch; with py_scalars
    also a python number as other (export keeps e.g. x + 2.5 as add.Tensor)."""
    den = NZ if nonzero else I
    cases = [c(F(2, 3), P(2, 3)), c(F(4, 1, 3), P(5, 1)), c(F(0, 3), P(3)),
             c(F(3), torch.tensor(2.5, dtype=torch.float64)),     # 0-d float64 does not upcast float32
             c(S(1.5), P(2, 2))]
    if int_ok:
        cases += [c(I(2, 3), den(2, 3)), c(I(2, 3), P(3)), c(I(4), S(2.5))]
    if py_scalars:
        cases += [c(F(2, 3), 1.5)] + ([c(I(3), 3), c(I(2, 2), 2.5)] if int_ok else [])  # int64 + float: float32
    if bool_ok and int_ok:
        cases += [c(B(2, 3), den(3))]
    return cases


def _scalar_cases(int_ok=True, bool_ok=True, nonzero=False):
    """(Tensor, Scalar) calls."""
    cases = [c(F(2, 3), 2.5), c(F(0, 4), -1.5), c(S(0.75), 3.0), c(F(3), 2)]
    if int_ok:
        cases += [c(I(2, 3), 2.5), c(I(2, 3), 3 if nonzero else -2)]
    if bool_ok and int_ok:
        cases += [c(B(4), 2), c(B(4), 1.5)]
    return cases


def _unary_cases(floats_only=False):
    cases = [c(F(3, 4)), c(F(0, 3)), c(S(0.5)), c(_with_nan(F(7))),
             c(torch.tensor([0.0, -0.0, 1e-8, -1e-8, 3.5, -3.5, 2.5, -2.5, 1e30, -1e30]))]
    if not floats_only:
        cases += [c(I(2, 5))]
    return cases


def _reduction_cases(dims_arg=True, list_dims=True):
    x = F(3, 4, 5)
    if not dims_arg:
        return [c(x), c(F(0, 3)), c(S(2.0))]
    d = (lambda v: [v] if isinstance(v, int) else v) if list_dims else (lambda v: v)
    return [c(x, d(1)), c(x, d(-1), True), c(F(0, 4), d(1)), c(F(0, 4), d(0)), c(S(2.0), d(0))] + \
        ([c(x, [0, -1]), c(x, [-1, 0], True), c(x, None), c(x, [])] if list_dims else [])


def _idx(*vals):
    return torch.tensor(vals)


@functools.lru_cache(maxsize=None)
def hand_cases() -> dict:
    cs: dict[str, list] = {}

    def add(name, *cases):
        cs.setdefault(name, []).extend(cases)

    # casts / factories
    add("_to_copy.default", c(F(2, 3), dtype=torch.int64), c(F(2, 3) * 4, dtype=torch.bool),
        c(I(3), dtype=torch.float32), c(B(3), dtype=torch.float32), c(F(0, 2)), c(S(2.7), dtype=torch.int64))
    add("full.default", c([2, 3], 1.5), c([2], 3), c([0, 2], True), c([2], 2.5, dtype=torch.int64), c([], 1.0))
    add("full_like.default", c(F(2, 3), 7), c(I(2), 2.9), c(I(2), 1.5, dtype=torch.float32), c(F(0, 3), 1.0))
    for name in ("zeros_like.default", "ones_like.default"):
        add(name, c(F(2, 3)), c(I(2)), c(B(3), dtype=torch.float32), c(S(1.0)))
    add("empty.memory_format", c([2, 3]), c([0], dtype=torch.int64))
    add("new_zeros.default", c(I(2), [3, 2]), c(F(1), [0], dtype=torch.bool))
    add("new_ones.default", c(F(2), [3]), c(I(1), [2, 2], dtype=torch.float32))
    add("new_full.default", c(F(2), [3], 2.5), c(I(1), [2], 2.7), c(I(1), [2], 2, dtype=torch.float32))
    add("scalar_tensor.default", c(1), c(2.5), c(True), c(3, dtype=torch.int64))
    add("arange.default", c(5), c(2.5), c(0), c(4, dtype=torch.float32))
    add("arange.start", c(2, 7), c(-1.5, 2), c(3, 3))
    add("arange.start_step", c(0, 1, 0.1), c(10, 0, -3), c(-2, 5, 2), c(0, 5, 1, dtype=torch.float32),
        c(0.5, 3.0, 0.25), c(0.0, -8.000001, -4.0, dtype=torch.int64), c(0.5, 7.9, 2.5, dtype=torch.int64))
    for name in ("clone.default", "alias.default", "lift_fresh_copy.default"):
        add(name, c(F(2, 3)), c(I(0, 2)), c(S(True)))
    add("copy.default", c(F(2, 3), I(3)), c(I(2, 2), F(2, 2)), c(F(0, 3), F(3)))

    # binary
    for name in ("add", "sub"):
        add(f"{name}.Tensor", *_binary_cases(bool_ok=name == "add", py_scalars=True), c(F(2, 3), F(3), alpha=2.5),
            c(I(3), I(3), alpha=3))
        add(f"{name}.Scalar", *_scalar_cases(bool_ok=name == "add"), c(F(3), 2.0, -0.5))
    add("mul.Tensor", *_binary_cases(py_scalars=True), c(B(3), B(3)))
    add("mul.Scalar", *_scalar_cases())
    add("div.Tensor", *_binary_cases(nonzero=True, py_scalars=True), c(F(3), torch.tensor([0.0, -0.0, 1.0])))
    add("div.Scalar", *_scalar_cases(nonzero=True), c(I(3), 4))
    for mode in ("floor", "trunc", None):
        add("div.Tensor_mode",
            *[c(*a, rounding_mode=mode) for a, _ in _binary_cases(nonzero=True, py_scalars=True)],
            c(_idx(7, -7, 7, -7, 0), _idx(2, 2, -2, -2, 3), rounding_mode=mode),
            c(torch.tensor([7.5, -7.5, 7.5, -7.5, 1.0]), torch.tensor([2.0, 2.0, -2.0, -2.0, 0.0]),
              rounding_mode=mode))
        add("div.Scalar_mode", *[c(*a, rounding_mode=mode) for a, _ in _scalar_cases(nonzero=True)])
    for name in ("remainder", "fmod"):
        add(f"{name}.Tensor", *_binary_cases(nonzero=True, bool_ok=False),
            c(_idx(7, -7, 7, -7), _idx(3, 3, -3, -3)),
            c(torch.tensor([5.5, -5.5, 5.5, -5.5, 3.0]), torch.tensor([2.0, 2.0, -2.0, -2.0, 0.0])))
        add(f"{name}.Scalar", *_scalar_cases(nonzero=True, bool_ok=False), c(F(4) * 5, -1.5))
    add("remainder.Scalar_Tensor", c(5, NZ(2, 3)), c(5.5, P(3)), c(-7, NZ(4)))
    add("pow.Tensor_Tensor", c(P(2, 3), F(2, 3)), c(F(4, 1), P(3)), c(I(6), _idx(2, 0, 1, 3, 2, 1)),
        c(_idx(0, 1, -1, 2, -2, -1, 3), _idx(-1, -2, -3, -1, -1, 2, 2)), c(I(3), P(3)), c(F(0, 2), P(2)),
        c(P(3), S(2.0)))
    add("pow.Tensor_Scalar", c(P(2, 3), 0.5), c(F(3), 2), c(F(3), 3.0), c(P(3), -1), c(P(3), -0.5),
        c(I(4), 2), c(I(4), 0.5), c(F(0, 3), 2.0), c(S(2.0), 3))
    add("pow.Scalar", c(2.0, F(3)), c(2, I(4, lo=0)), c(1, _with_nan(F(4))), c(2, F(2, 2)), c(0.5, I(3)))
    for name in ("maximum", "minimum"):
        add(f"{name}.default", *_binary_cases(), c(_with_nan(F(6)), F(6)), c(B(3), B(3)))
    add("atan2.default", c(F(2, 3), F(2, 3)), c(F(4, 1), F(3)), c(I(3), I(3)), c(F(0, 2), F(2)))
    for name in ("eq", "ne", "lt", "le", "gt", "ge"):
        add(f"{name}.Tensor", *_binary_cases(), c(I(3, 4, lo=0, hi=3), I(4, lo=0, hi=3)),
            c(_with_nan(F(6)), _with_nan(F(6))), c(B(3), B(3)))
        add(f"{name}.Scalar", *_scalar_cases(), c(I(5, lo=0, hi=3), 1), c(_idx(16777217), 16777216.0),
            c(B(4), True))
    for name in ("logical_and", "logical_or", "logical_xor"):
        add(f"{name}.default", c(B(2, 3), B(2, 3)), c(I(2, 3, lo=-1, hi=2), F(3)), c(B(0, 2), B(2)),
            c(_with_nan(F(3)), B(3)))
    add("logical_not.default", c(B(2, 3)), c(I(4, lo=-1, hi=2)), c(_with_nan(F(4))), c(B(0)))
    for name in ("bitwise_and", "bitwise_or", "bitwise_xor"):
        add(f"{name}.Tensor", c(I(2, 3), I(2, 3)), c(B(2, 3), B(3)), c(I(4), B(4)), c(I(0, 2), I(2)))
        add(f"{name}.Scalar", c(I(2, 3), 5), c(B(3), True), c(I(3), -2))
        add(f"{name}.Scalar_Tensor", c(5, I(2, 3)), c(True, B(3)))
    add("bitwise_not.default", c(I(2, 3)), c(B(4)), c(I(0)))
    add("where.self", c(B(2, 3), F(2, 3), F(2, 3)), c(B(3, 1), F(4), I(3, 4)), c(B(2), I(2), B(2)),
        c(B(0, 2), F(2), F(0, 2)), c(S(True), F(2), S(0.5)))
    add("where.ScalarOther", c(B(2, 3), F(2, 3), 0.5), c(B(3), I(3), 0.5), c(B(3), I(3), 2))
    add("where.ScalarSelf", c(B(2, 3), 0.5, F(2, 3)), c(B(3), 1, I(3)), c(B(3), True, B(3)))
    add("where.Scalar", c(B(2, 3), 1.0, 0.0), c(B(3), 1, 0), c(B(3), 2, 0.5))
    add("masked_fill.Scalar", c(F(2, 3), B(2, 3), -1.5), c(F(3), B(2, 1), 0.0), c(I(2, 3), B(3), 2.7),
        c(F(0, 3), B(0, 3), 1.0), c(B(3), B(3), True))
    add("masked_fill.Tensor", c(F(2, 3), B(2, 3), S(-1.5)), c(I(3), B(3), S(4)), c(F(3), B(3), S(2)))
    add("clamp.default", c(F(3, 4), -0.5, 0.5), c(F(3), None, 0.0), c(F(3), 0.0), c(I(5), -2, 3), c(I(5), 0.5),
        c(_with_nan(F(4)), -1.0, 1.0), c(F(3), 1.0, -1.0), c(F(0, 2), 0.0, 1.0))
    add("clamp.Tensor", c(F(3, 4), F(4) - 1, F(3, 1) + 1), c(F(3), None, F(3)), c(F(3), S(0.0)),
        c(I(4), I(4), None),
        c(I(4), P(4)))
    for name in ("clamp_min", "clamp_max"):
        add(f"{name}.default", c(F(3, 4), 0.1), c(I(5), 1), c(I(5), 0.5), c(_with_nan(F(4)), 0.0), c(F(0), 1.0))
        add(f"{name}.Tensor", c(F(3, 4), F(4)), c(I(5), I(5)), c(F(3), S(0.0)), c(I(3), P(3)))

    # type promotion beyond float32 / int64 / bool: tensor ranks (dimensioned, 0-d, python numbers)
    i32, u8, i8 = I(4).to(torch.int32), I(4, lo=0, hi=9).to(torch.uint8), I(4).to(torch.int8)
    f64 = F(4).double()
    add("add.Tensor", c(i32, S(7)), c(u8, i8), c(i32, 2.5), c(f64, F(4)),
        c(i32, torch.tensor(1.5, dtype=torch.float64)),
        c(u8, S(True)), c(S(3).to(torch.int8), I(4)), c(f64, 0.1), c(B(4), S(2.5)))
    add("mul.Tensor", c(i8, S(3)), c(u8, 3), c(i32, F(4)), c(B(4), 2))
    add("div.Tensor", c(i32, u8 + 1), c(f64, 3))
    add("sum.default", c(i32), c(u8), c(f64))
    add("cumsum.default", c(u8, 0), c(i32, 0))
    add("any.default", c(u8))
    add("any.dim", c(u8.reshape(2, 2), 1))
    add("where.self", c(B(4), i32, S(2.5)), c(B(4), u8, i8), c(B(4), f64, F(4)))
    add("lt.Scalar", c(i32, 2.5), c(u8, 3))
    add("maximum.default", c(i32, I(4)), c(u8, i8))
    add("cat.default", c([i32, I(3)]), c([u8, i8]), c([f64, F(2)]))

    # unary
    for name in ("exp", "expm1", "log", "log1p", "log2", "sqrt", "rsqrt", "reciprocal", "sin", "cos", "tanh",
                 "sigmoid", "erf"):
        add(f"{name}.default", *_unary_cases(), c(B(4)), c(F(6) * 30))
    for name in ("neg", "abs", "sign", "relu", "floor", "ceil", "round", "trunc"):
        add(f"{name}.default", *_unary_cases())
    add("sign.default", c(B(4)))
    add("isnan.default", *_unary_cases(), c(torch.tensor([float("inf"), -float("inf"), float("nan")])), c(B(3)))
    add("isinf.default", *_unary_cases(), c(torch.tensor([float("inf"), -float("inf"), float("nan")])), c(B(3)))
    add("round.default", c(torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999])))
    add("round.decimals", c(F(3, 4) * 100, decimals=2), c(torch.tensor([1.2345, 125.0, -135.0]), decimals=-1),
        c(F(3), decimals=0))
    erf_grid = torch.linspace(-6, 6, 2001)
    add("erf.default", c(erf_grid),
        c(torch.tensor([1e-30, -1e-6, 0.999, 1.0, 1.001, float("inf"), -float("inf")])))
    add("gelu.default", *_unary_cases(floats_only=True), c(erf_grid), c(F(3, 4), approximate="tanh"),
        c(erf_grid, approximate="tanh"))
    add("silu.default", *_unary_cases(floats_only=True), c(F(5) * 50))
    add("leaky_relu.default", *_unary_cases(floats_only=True), c(F(3, 4), 0.2), c(F(3), -1.5))
    add("hardtanh.default", *_unary_cases(floats_only=True), c(F(3, 4) * 3, -2.0, 0.5), c(I(5), 0, 3))
    add("elu.default", *_unary_cases(floats_only=True), c(F(3, 4), 0.5, 2.0, 1.5))
    add("_prelu_kernel.default", c(F(2, 3, 4), P(3, 1)), c(F(2, 3), F(1)), c(F(0, 3), P(3)))
    add("prelu.default", c(F(2, 3, 4), P(3)), c(F(2, 3), F(1)), c(F(2, 3, 4, 5), P(3)), c(F(0, 3), P(3)),
        c(F(5), P(1)))
    for name in ("hardsigmoid", "hardswish"):
        add(f"{name}.default", *_unary_cases(floats_only=True), c(torch.linspace(-5, 5, 41)))
    add("softplus.default", *_unary_cases(floats_only=True), c(F(3, 4) * 10, 2.0, 5.0), c(F(5) * 30))
    for name in ("_softmax", "_log_softmax"):
        add(f"{name}.default", c(F(3, 4), 1, False), c(F(3, 4, 5), -1, False), c(F(3, 4) * 50, 0, False),
            c(F(0, 4), -1, False), c(S(1.5), 0, False),
            c(torch.tensor([[-float("inf"), 0.0, 1.0], [-float("inf")] * 3]), 1, False))

    # reductions
    add("sum.dim_IntList", *_reduction_cases(), c(I(3, 4), [1]), c(B(3, 4), [0]),
        c(I(3, 4), [1], dtype=torch.float32), c(F(2, 70), [1]))
    add("sum.default", *_reduction_cases(dims_arg=False), c(I(3, 4)), c(B(5)), c(I(3), dtype=torch.float32))
    add("mean.dim", *_reduction_cases(), c(I(3, 4), [1], dtype=torch.float32))
    add("mean.default", *_reduction_cases(dims_arg=False), c(I(3), dtype=torch.float32))
    for name in ("amax", "amin"):
        add(f"{name}.default", *[x for x in _reduction_cases() if x[0][0].numel() and x[0][1] is not None],
            c(I(3, 4), [0]), c(B(3, 2), [1]),
            c(_with_nan(F(3, 4)), [1]), c(F(3, 4)), c(F(0, 4), [1]))
    for name in ("max", "min"):
        add(f"{name}.dim", c(F(3, 4), 1), c(F(3, 4), -2, True), c(_idx(1, 3, 3, 2), 0), c(I(3, 4, lo=0, hi=2), 1),
            c(_with_nan(F(3, 4)), 1), c(F(0, 4), 1), c(S(2.0), 0), c(B(3, 2), 0))
        add(f"{name}.default", c(F(3, 4)), c(I(5)), c(_with_nan(F(4))), c(S(1.0)))
    for name in ("argmax", "argmin"):
        add(f"{name}.default", c(F(3, 4)), c(F(3, 4), 1), c(F(3, 4), -1, True), c(F(3, 4), None, True),
            c(I(3, 4, lo=0, hi=2), 0), c(_with_nan(F(3, 4)), 1), c(F(0, 4), 1), c(S(1.0)))
    add("var.correction", c(F(3, 4, 5), [1]), c(F(3, 4), None), c(F(3, 4), [0, 1], correction=0),
        c(F(3, 4), [-1], correction=2, keepdim=True), c(F(3, 1), [1]), c(F(0, 4), [1]), c(F(3, 4), []))
    add("var.dim", c(F(3, 4), [1]), c(F(3, 4), [0], False, True), c(F(3, 4), None))
    add("var.default", c(F(3, 4)), c(F(5), False))
    add("prod.default", c(F(3, 4)), c(I(5)), c(B(4)), c(F(0, 3)), c(I(3), dtype=torch.float32))
    add("prod.dim_int", c(F(3, 4), 1), c(I(3, 4), -1, True), c(B(2, 3), 0), c(F(0, 4), 1), c(S(3.0), 0))
    for name in ("any", "all"):
        add(f"{name}.default", c(B(3, 4)), c(I(5, lo=0, hi=2)), c(F(0, 3)), c(torch.ones(3, dtype=torch.bool)),
            c(_with_nan(torch.zeros(4))))
        add(f"{name}.dim", c(B(3, 4), 1), c(I(3, 4, lo=0, hi=2), -1, True), c(F(0, 3), 1), c(S(True), 0))
        add(f"{name}.dims", c(B(3, 4), [1]), c(B(3, 4), None), c(B(3, 4), [0, 1], True),
            c(I(3, 4, lo=0, hi=2), []),
            c(F(0, 3), [0]))
    add("cumsum.default", c(F(3, 4), 1), c(F(3, 4), -2), c(I(3, 4), 0), c(B(5), 0), c(F(0, 4), 1), c(S(2.0), 0),
        c(I(3), 0, dtype=torch.float32))
    add("logsumexp.default", c(F(3, 4), [1]), c(F(3, 4) * 100, [0, 1], True), c(I(3, 4), [1]),
        c(torch.tensor([[-float("inf")] * 3, [float("inf"), 0.0, 1.0]]), [1]), c(F(0, 4), [1]))

    # linear algebra
    add("mm.default", c(F(3, 4), F(4, 5)), c(F(0, 4), F(4, 2)), c(I(2, 3), I(3, 2)))
    add("bmm.default", c(F(2, 3, 4), F(2, 4, 5)), c(F(0, 3, 4), F(0, 4, 2)))
    add("addmm.default", c(F(5), F(3, 4), F(4, 5)), c(F(3, 5), F(3, 4), F(4, 5), beta=0.5, alpha=2.0),
        c(torch.full((3, 1), float("nan")), F(3, 4), F(4, 2), beta=0), c(F(2), F(0, 4), F(4, 2)))
    add("linear.default", c(F(3, 4), F(5, 4)), c(F(3, 4), F(5, 4), F(5)), c(F(2, 3, 4), F(5, 4), F(5)),
        c(F(0, 4), F(2, 4)))
    add("baddbmm.default", c(F(2, 3, 5), F(2, 3, 4), F(2, 4, 5)),
        c(F(5), F(2, 3, 4), F(2, 4, 5), beta=2.0, alpha=0.5))
    add("matmul.default", c(F(3, 4), F(4, 5)), c(F(4), F(4)), c(F(4), F(4, 3)), c(F(2, 1, 3, 4), F(5, 4, 2)),
        c(F(0, 3, 4), F(4)))

    # normalisation
    add("_native_batch_norm_legit_no_training.default",
        c(F(4, 3, 5, 5), P(3), F(3), F(3), P(3), 0.1, 1e-5), c(F(4, 3), None, None, F(3), P(3), 0.1, 1e-3),
        c(F(0, 3, 7), P(3), F(3), F(3), P(3), 0.1, 1e-5), c(F(2, 3, 5), None, F(3), F(3), P(3), 0.1, 1e-5))
    add("native_layer_norm.default", c(F(4, 6), [6], P(6), F(6), 1e-5), c(F(2, 3, 4, 5), [4, 5], None, None, 1e-5),
        c(F(0, 8), [8], P(8), None, 1e-5), c(F(3, 5) * 10 + 3, [5], None, F(5), 1e-6))
    add("native_group_norm.default", c(F(2, 6, 4, 4), P(6), F(6), 2, 6, 16, 3, 1e-5),
        c(F(3, 4, 5), None, None, 3, 4, 5, 2, 1e-5), c(F(0, 4, 3), P(4), F(4), 0, 4, 3, 4, 1e-5))

    # convolution and pooling
    conv = "convolution.default"
    add(conv, c(F(2, 3, 10), F(4, 3, 3), F(4), [1], [0], [1], False, [0], 1),
        c(F(2, 4, 11), F(6, 2, 3), None, [2], [1], [2], False, [0], 2),
        c(F(2, 3, 8, 9), F(5, 3, 3, 2), F(5), [1, 1], [1, 0], [1, 1], False, [0, 0], 1),
        c(F(1, 4, 9, 9), F(4, 1, 3, 3), P(4), [2, 1], [1, 2], [2, 1], False, [0, 0], 4),   # depthwise
        c(F(0, 3, 6, 6), F(2, 3, 3, 3), None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1),
        c(F(2, 6, 7, 7), F(4, 3, 1, 1), F(4), [1, 1], [0, 0], [1, 1], False, [0, 0], 2))
    add("max_pool2d_with_indices.default", c(F(2, 3, 8, 8), [2, 2]), c(F(1, 2, 9, 7), [3, 2], [2, 1], [1, 1]),
        c(F(2, 7, 7), [3, 3], [2, 2], [1, 1], [2, 2]), c(F(1, 1, 7, 8), [2, 3], [2, 2], [0, 1], [1, 1], True),
        c(F(0, 2, 4, 4), [2, 2]), c(I(1, 2, 4, 6), [2, 2]))
    add("avg_pool2d.default", c(F(2, 3, 8, 8), [2, 2]), c(F(1, 2, 9, 7), [3, 2], [2, 1], [1, 1]),
        c(F(1, 2, 9, 7), [3, 3], [2, 2], [1, 1], False, False), c(F(1, 1, 7, 8), [2, 3], [2, 2], [1, 1], True),
        c(F(1, 1, 7, 8), [3, 3], [2, 2], [1, 1], True, False), c(F(2, 6, 6), [2, 2], [], [0, 0], False, True, 3),
        c(F(0, 2, 4, 4), [2, 2]))
    add("adaptive_avg_pool1d.default", c(F(2, 3, 8), [4]), c(F(2, 3, 7), [3]), c(F(3, 10), [1]),
        c(F(0, 2, 6), [4]))
    add("_adaptive_avg_pool2d.default", c(F(2, 3, 8, 8), [1, 1]), c(F(2, 3, 7, 9), [3, 4]), c(F(3, 6, 6), [2, 3]),
        c(F(0, 2, 4, 4), [2, 2]))

    # views and shapes
    for name in ("view.default", "_unsafe_view.default", "reshape.default"):
        add(name, c(F(2, 3, 4), [6, 4]), c(F(2, 3, 4), [-1, 4]), c(F(0, 3), [0, 3, 1]), c(S(1.0), [1]),
            c(F(1), []))
    add("permute.default", c(F(2, 3, 4), [2, 0, 1]), c(F(2, 3, 4), [-1, 0, -2]), c(F(0, 3), [1, 0]), c(S(1.0), []))
    add("expand.default", c(F(3, 1), [2, -1, 4]), c(F(1), [5]), c(F(0, 1), [0, 3]), c(S(2.0), [2, 2]),
        c(F(3, 1), [3, 2], implicit=True))
    add("slice.Tensor", c(F(5, 6), 1, 1, 4), c(F(5, 6), 0, None, None, 2), c(F(5, 6), -1, -4, -1),
        c(F(5, 6), 0, 2, 100), c(F(5, 6), 1, -100, 3), c(F(5, 6), 0, 4, 2),
        c(F(5, 6), 1, 0, 9223372036854775807, 3),
        c(F(0, 3), 0, 0, 1), c(F(5, 6), 0, 7, 9))
    add("select.int", c(F(3, 4), 1, 2), c(F(3, 4), -1, -1), c(F(3, 4, 5), 0, 0), c(F(3), 0, 1), c(F(0, 4), 1, 3))
    add("unsqueeze.default", c(F(2, 3), 0), c(F(2, 3), -1), c(F(2, 3), 2), c(S(1.0), 0), c(F(0, 2), 1))
    add("squeeze.dim", c(F(2, 1, 3), 1), c(F(2, 1, 3), 0), c(F(2, 1, 1), -1), c(S(1.0), 0), c(F(0, 1), 1))
    add("squeeze.dims", c(F(2, 1, 3, 1), [1, 3]), c(F(2, 1, 3, 1), [0, -1]), c(S(1.0), [0]), c(F(1, 0, 1), []))
    add("squeeze.default", c(F(2, 1, 3, 1)), c(F(1, 1)), c(F(0, 1)), c(S(1.0)))
    add("cat.default", c([F(2, 3), F(4, 3)]), c([F(2, 3), F(2, 1)], -1), c([I(2), F(3)]), c([F(2, 3), F(0)]),
        c([B(2), I(2)]), c([F(0, 3), F(2, 3)], 0), c([F(0)]))
    add("stack.default", c([F(2, 3), F(2, 3)]), c([F(2, 3), F(2, 3)], -1), c([I(2), I(2)], 1), c([S(1.0), S(2.0)]),
        c([F(0, 2), F(0, 2)], 1))
    add("split_with_sizes.default", c(F(5, 4), [2, 3]), c(F(5, 4), [1, 0, 3], -1), c(F(0, 4), [0]))
    add("split.sizes", c(F(5, 4), [2, 3]), c(F(5, 4), [4], 1))
    add("split.default", c(F(5, 4), [2, 3]), c(F(5, 4), [1, 3], -1))
    add("split.Tensor", c(F(5, 4), 2), c(F(5, 4), 3, -1), c(F(5, 4), 10), c(F(0, 4), 2))
    add("unbind.int", c(F(3, 4)), c(F(3, 4), -1), c(F(0, 4)), c(F(2, 0), 0))
    add("t.default", c(F(3, 4)), c(F(3)), c(S(1.0)), c(F(0, 2)))
    add("transpose.int", c(F(2, 3, 4), 0, 2), c(F(2, 3, 4), -1, 1), c(S(1.0), 0, -1), c(F(0, 3), 0, 1))
    add("flip.default", c(F(3, 4), [0]), c(F(2, 3, 4), [-1, 0]), c(F(3, 4), []), c(F(0, 2), [1]))
    add("roll.default", c(F(3, 4), [1], [0]), c(F(3, 4), [2, -1], [1, 0]), c(F(3, 4), [5]), c(F(0, 2), [1], [1]))
    add("repeat.default", c(F(2, 3), [2, 1]), c(F(2, 3), [2, 1, 3]), c(F(2), [0]), c(S(1.0), [3]),
        c(F(0, 2), [2, 2]))
    for name in ("tril.default", "triu.default"):
        add(name, c(F(4, 5)), c(F(4, 5), 1), c(F(2, 4, 3), -1), c(B(3, 3)), c(F(0, 3, 3), 2))
    add("constant_pad_nd.default", c(F(2, 3), [1, 2]), c(F(2, 3, 4), [1, 0, 0, 2], 1.5), c(F(2, 5), [-1, 2]),
        c(I(2, 3), [1, 1, 1, 1], 7), c(F(0, 3), [1, 1]), c(F(2, 3), [1, -2, 0, 1]))
    add("index_select.default", c(F(5, 3), 0, _idx(4, 0, 0)), c(F(5, 3), -1, _idx(2, 1)), c(F(5, 3), 0, S(1)),
        c(F(0, 3), 1, _idx(2)), c(F(5, 3), 0, torch.zeros(0, dtype=torch.int64)))
    add("gather.default", c(F(3, 4), 1, I(3, 2, lo=0, hi=4)), c(F(3, 4), 0, I(2, 4, lo=0, hi=3)),
        c(F(3, 4, 5), -1, I(2, 3, 2, lo=0, hi=5)), c(F(3, 4), 1, torch.zeros(3, 0, dtype=torch.int64)))
    perm = torch.stack([torch.randperm(5, generator=_g) for _ in range(3)])    # no duplicate targets
    add("scatter.src", c(F(3, 5), 1, perm, F(3, 5)), c(F(3, 5), 1, perm[:, :2], F(3, 4)),
        c(F(5, 3), 0, perm.T[:2], F(2, 3)))
    add("scatter.value", c(F(3, 5), 1, perm[:, :3], 2.5), c(I(3, 5), 1, perm, 7), c(F(5, 3), -2, perm.T[:1], -1.0))
    dup = I(3, 6, lo=0, hi=4)
    add("scatter_add.default", c(F(3, 4), 1, dup, F(3, 6)), c(F(4, 3), 0, dup.T[:, :2], F(6, 3)),
        c(I(3, 4), 1, dup, I(3, 6)))
    for red in ("sum", "prod", "mean", "amax", "amin"):
        for inc in (True, False):
            add("scatter_reduce.two", c(F(3, 4), 1, dup, F(3, 6), red, include_self=inc),
                c(I(3, 4), 1, dup, I(3, 6), red, include_self=inc), c(F(4, 3), 0, dup.T[:, :2], F(6, 3), red,
                                                                      include_self=inc))
    add("index.Tensor", c(F(5, 6), [_idx(0, 2, 4)]), c(F(5, 6), [None, _idx(1, -1)]),
        c(F(5, 6, 7), [_idx(0, 1), None, _idx(2, 3)]),                    # non-adjacent: moved to the front
        c(F(5, 6, 7), [None, _idx(0, 1), _idx(2, 3)]), c(F(5, 6), [B(5)]), c(F(5, 6), [I(2, 3, lo=0, hi=5)]),
        c(F(5, 6), [S(2), S(3)]), c(F(5, 6, 7), [_idx(1), None, I(2, 1, lo=0, hi=7)]), c(F(0, 3), [None, _idx(1)]))
    add("index_put.default", c(F(5, 6), [_idx(0, 2, 4)], F(3, 6)), c(F(5, 6), [None, _idx(1, 3)], 1.5 * P(5, 2)),
        c(F(5, 6), [_idx(0, 0, 1)], F(3, 6), True), c(F(5, 6), [B(5, 6)], S(9.0)),
        c(F(5, 6, 7), [_idx(0, 1), None, _idx(2, 3)], F(7 - 1)[:1].expand(2, 6), True),
        c(I(4, 4), [_idx(1, 2), _idx(3, 3)], _idx(7, 8), True))
    add("embedding.default", c(F(10, 4), I(3, 5, lo=0, hi=10)), c(F(10, 4), _idx(0, 9, 9)), c(F(10, 4), S(3)),
        c(F(10, 4), torch.zeros(0, 2, dtype=torch.int64)), c(F(10, 4), _idx(1, 2), 1))
    ties = torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0], [float("nan"), 2.0, float("nan"), -1.0, 2.0]])
    for name in ("sort.default", "argsort.default"):
        add(name, c(F(3, 6)), c(F(3, 6), 0, True), c(ties), c(ties, -1, True), c(I(4, 5, lo=0, hi=3), 1, True),
            c(B(6)), c(F(0, 4)), c(S(1.0)))
    for name in ("sort.stable", "argsort.stable"):
        add(name, c(ties, stable=True), c(ties, stable=True, descending=True), c(F(4, 3), stable=True, dim=0),
            c(I(6, lo=0, hi=3), stable=False, descending=True))
    add("topk.default", c(F(3, 8), 3), c(F(3, 8), 2, 0), c(F(3, 8), 3, -1, False), c(ties, 2),
        c(ties, 3, 1, False),
        c(F(0, 5), 2), c(F(4, 5), 0), c(I(3, 6, lo=0, hi=3), 4), c(F(6), 6, 0, True, False))
    add("sym_size.int", c(F(3, 4), 1), c(F(3, 4), -2), c(F(0, 2), 0))
    add("sym_numel.default", c(F(3, 4)), c(F(0, 2)), c(S(1.0)))
    return cs


# --- cases from PyTorch's OpInfo samples -----------------------------------------

HARVEST = """add sub mul div remainder fmod pow float_power maximum minimum atan2 eq ne lt le gt ge logical_and
logical_or logical_xor logical_not bitwise_and bitwise_or bitwise_xor bitwise_not where masked_fill clamp
clamp_min clamp_max neg abs sign exp expm1 log log1p log2 sqrt rsqrt reciprocal sin cos tanh sigmoid
nn.functional.relu floor ceil round trunc isnan isinf erf nn.functional.gelu nn.functional.silu
nn.functional.leaky_relu nn.functional.hardtanh nn.functional.elu nn.functional.prelu nn.functional.hardsigmoid
nn.functional.hardswish nn.functional.softplus softmax log_softmax sum mean amax amin max min argmax argmin var
prod any all cumsum logsumexp mm bmm addmm baddbmm matmul nn.functional.layer_norm nn.functional.group_norm
nn.functional.conv1d nn.functional.conv2d nn.functional.max_pool2d nn.functional.avg_pool2d
nn.functional.adaptive_avg_pool1d nn.functional.adaptive_avg_pool2d view reshape permute expand select unsqueeze
squeeze cat stack split split_with_sizes unbind t transpose flip roll repeat tril triu nn.functional.pad
index_select gather scatter scatter_add scatter_reduce index_put nn.functional.embedding sort topk argsort
full_like zeros_like ones_like new_zeros new_ones new_full arange clone __getitem__ to""".split()


def _tensors(tree):
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, (list, tuple)):
        for x in tree:
            yield from _tensors(x)
    elif isinstance(tree, dict):
        for x in tree.values():
            yield from _tensors(x)


def _clone(tree):
    if isinstance(tree, torch.Tensor):
        return tree.detach().clone()
    if isinstance(tree, (list, tuple)):
        return type(tree)(_clone(x) for x in tree) if not hasattr(tree, "_fields") else tree
    if isinstance(tree, dict):
        return {k: _clone(v) for k, v in tree.items()}
    return tree


@functools.lru_cache(maxsize=None)
def harvested_cases() -> dict:
    """name -> [(args, kwargs)]: the ATen calls OpInfo samples of HARVEST make, for ops we register."""
    from torch.testing._internal.common_methods_invocations import op_db
    from torch.utils._python_dispatch import TorchDispatchMode

    found: dict[str, list] = {}

    class Capture(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = op_name(func)
            if (name in OPS and len(found.get(name, ())) < MAX_HARVESTED
                    and all(t.dtype in ALLOWED for t in _tensors((args, kwargs)))):
                found.setdefault(name, []).append((_clone(args), _clone(kwargs)))
            return func(*args, **kwargs)

    wanted = set(HARVEST)
    for info in op_db:
        if info.name not in wanted:
            continue
        for dtype in ALLOWED:
            if dtype not in info.supported_dtypes("cpu"):
                continue
            try:
                samples = list(info.sample_inputs("cpu", dtype))
            except Exception:
                continue
            for s in samples[:12]:
                try:
                    with Capture():
                        info.op(s.input, *s.args, **s.kwargs)
                except Exception:
                    continue
    return found


def _harvest_enabled() -> bool:
    return os.environ.get("EDGECOMPRESS_CONFORMANCE_OPINFO", "1") != "0"


# --- running and comparing -----------------------------------------------------------

NP_DTYPES = {torch.float32: np.float32, torch.float64: np.float64, torch.int64: np.int64, torch.int32: np.int32,
             torch.int16: np.int16, torch.int8: np.int8, torch.uint8: np.uint8, torch.bool: np.bool_}


def to_numpy(v):
    """A torch-side argument as a bundle node passes it to the numpy op."""
    if isinstance(v, torch.Tensor):
        return v.detach().numpy().copy()
    if isinstance(v, (list, tuple)):
        return [to_numpy(x) for x in v]
    return to_json_value(v)


def _snapshot(v):
    if isinstance(v, np.ndarray):
        return v.copy()
    if isinstance(v, list):
        return [_snapshot(x) for x in v]
    return v


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.shape == b.shape
                and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or a is b


def compare(got, want, where=""):
    if isinstance(want, torch.Tensor):
        assert isinstance(got, np.ndarray), f"{where}: got {type(got).__name__}, want a (0-d) ndarray"
        assert got.dtype == np.dtype(NP_DTYPES[want.dtype]), f"{where}: dtype {got.dtype}, torch {want.dtype}"
        assert got.shape == tuple(want.shape), f"{where}: shape {got.shape}, torch {tuple(want.shape)}"
        w = want.detach().numpy()
        if w.dtype.kind == "f":
            finite = np.abs(w[np.isfinite(w)])
            scale = max(1.0, float(finite.max())) if finite.size else 1.0
            np.testing.assert_allclose(got, w, rtol=RTOL, atol=ATOL * scale, equal_nan=True, err_msg=where)
        else:
            np.testing.assert_array_equal(got, w, err_msg=where)
    elif isinstance(want, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(want), f"{where}: got {got!r}"
        for k, (g, w) in enumerate(zip(got, want)):
            compare(g, w, f"{where}[{k}]")
    else:
        assert type(got) is type(want) and got == want, f"{where}: got {got!r}, torch {want!r}"


def _check_indices(x, dim, idx, want_idx, vals, where):
    assert isinstance(idx, np.ndarray) and idx.dtype == np.int64, f"{where}: indices {type(idx)}"
    assert idx.shape == tuple(want_idx.shape), f"{where}: indices shape {idx.shape}"
    if idx.size and x.ndim:
        np.testing.assert_array_equal(np.take_along_axis(x, idx, dim), vals, err_msg=where + " indices")


def _check_topk(got, want, np_args, where):
    """Tied values may come in any order in torch: values must match, indices must point at them."""
    x, k, dim, largest, is_sorted = np_args[:5]
    vals, idx = got
    compare(vals if is_sorted else np.sort(vals, axis=dim), want[0] if is_sorted else torch.sort(want[0], dim)[0],
            where + " values")
    _check_indices(x, dim, idx, want[1], vals, where)


def _check_sort(got, want, np_args, where):
    """sort.default is not stable in torch (large inputs): equal values may come in any order."""
    x, dim = np_args[0], np_args[1]
    compare(got[0], want[0], where + " values")
    _check_indices(x, dim, got[1], want[1], got[0], where)


def _check_argsort(got, want, np_args, where):
    x, dim = np_args[0], np_args[1]
    _check_indices(x, dim, got, want, np.take_along_axis(x, want.numpy(), dim) if x.ndim else x, where)


def _check_shape_dtype(got, want, np_args, where):
    compare(np.zeros_like(got), torch.zeros_like(want), where)      # values are undefined in torch


CHECKS = {"topk.default": _check_topk, "sort.default": _check_sort, "argsort.default": _check_argsort,
          "empty.memory_format": _check_shape_dtype}


def run_case(name, args, kwargs, where):
    target = overload(name)
    values = schema_args(target, args, kwargs)
    pos, kw = split_args(target, values)
    try:
        want = target(*pos, **kw)
    except Exception as e:              # not a valid call for torch either: nothing to compare
        return f"torch refused: {type(e).__name__}"
    np_args = [to_numpy(v) for v in values]
    before = _snapshot(np_args)
    got = OPS[name](*np_args)
    CHECKS.get(name, lambda g, w, a, wh: compare(g, w, wh))(got, want, np_args, where)
    assert all(_same(a, b) for a, b in zip(before, np_args)), f"{where}: the op modified its inputs"
    return None


def _describe(args, kwargs):
    def d(v):
        if isinstance(v, torch.Tensor):
            return f"{str(v.dtype).replace('torch.', '')}{list(v.shape)}"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(d(x) for x in v) + "]"
        return repr(v)
    return ", ".join([d(a) for a in args] + [f"{k}={d(v)}" for k, v in kwargs.items()])


@pytest.mark.parametrize("name", ATEN_OPS)
def test_op_matches_torch(name):
    cases = [("hand", a, k) for a, k in hand_cases().get(name, [])]
    if _harvest_enabled():
        cases += [("opinfo", a, k) for a, k in harvested_cases().get(name, [])]
    assert cases, f"{name} has no conformance case"
    ran = 0
    for src, args, kwargs in cases:
        skipped = run_case(name, args, kwargs, f"{name}({_describe(args, kwargs)}) [{src}]")
        if skipped is None:
            ran += 1
        else:
            assert src == "opinfo", f"hand-written case {name}({_describe(args, kwargs)}): {skipped}"
    assert ran


def test_every_aten_op_has_a_hand_written_case():
    """A new ATen op can't be added untested: it needs a case in hand_cases() (OpInfo may not reach it)."""
    missing = [n for n in ATEN_OPS if not hand_cases().get(n)]
    assert not missing, f"ops without a conformance case in tests/test_op_conformance.py: {missing}"
    unknown = [n for n in hand_cases() if n not in OPS]
    assert not unknown, f"cases for ops that are not registered: {unknown}"


def test_every_aten_op_is_a_real_overload():
    bad = [n for n in ATEN_OPS if overload(n) is None]
    assert not bad, f"not torch.ops.aten overloads: {bad}"


def test_float32_stays_float32_with_python_floats():
    """numpy 1.x value-based casting / 0-d float64 operands must not upcast the result."""
    x = np.ones((2, 3), np.float32)
    for name, args in [("add.Tensor", (x, 0.1, 1)), ("mul.Scalar", (x, 1e-3)), ("div.Tensor", (x, np.float64(3))),
                       ("sub.Tensor", (x, np.asarray(0.5), 2.5)), ("pow.Tensor_Scalar", (x, 0.5)),
                       ("clamp.default", (x, 0.25, 0.5)), ("where.self", (x > 0, x, 0.5)),
                       ("maximum.default", (x, np.asarray(2.0)))]:
        assert OPS[name](*args).dtype == np.float32, name
    assert OPS["add.Tensor"](np.arange(3), 0.5, 1).dtype == np.float32       # int64 + python float
    assert OPS["sum.dim_IntList"](np.ones((2, 3), np.float32), [1], False, None).dtype == np.float32


def test_zero_d_results_are_arrays():
    x = np.ones((3,), np.float32)
    for r in (OPS["sum.default"](x, None), OPS["select.int"](x, 0, 1), OPS["matmul.default"](x, x),
              OPS["add.Tensor"](np.asarray(1.0, np.float32), 2.0, 1), OPS["max.dim"](x, 0, False)[1]):
        assert type(r) is np.ndarray and r.ndim == 0


def test_params_are_accepted_as_tensors():
    """Model weights reach ATen ops as Param objects (lowering refers to them with {"p": name})."""
    from edgecompress_runtime.params import Param
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    p = Param("w", "fp32", {"data": w}, w.shape)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(OPS["mm.default"](x, OPS["t.default"](p)), x @ w.T)
    np.testing.assert_array_equal(OPS["addmm.default"](np.zeros(3, np.float32), x, w.T, 1, 1), x @ w.T)
    np.testing.assert_array_equal(OPS["embedding.default"](p, np.array([2, 0]), -1, False, False), w[[2, 0]])


def test_transposed_convolution_is_refused():
    x, w = np.ones((1, 2, 5), np.float32), np.ones((2, 3, 3), np.float32)
    with pytest.raises(NotImplementedError, match="transposed"):
        OPS["convolution.default"](x, w, None, [1], [0], [1], True, [0], 1)
    with pytest.raises(ValueError):
        OPS["convolution.default"](x, w, None, [1], [0], [1], True, [0], 1)


@pytest.mark.parametrize("name, args", [
    ("index_select.default", (np.zeros((3, 2), np.float32), 0, np.array([0, -1]))),
    ("gather.default", (np.zeros((3, 2), np.float32), 0, np.array([[0, -1]]), False)),
    ("embedding.default", (np.zeros((3, 2), np.float32), np.array([-1]), -1, False, False)),
    ("scatter.value", (np.zeros((3, 2), np.float32), 0, np.array([[-1, 0]]), 1.0)),
    ("index_select.default", (np.zeros((3, 2), np.float32), 0, np.array([3]))),
])
def test_out_of_range_indices_raise(name, args):
    """torch refuses these (numpy would count negative indices from the end)."""
    with pytest.raises(IndexError):
        OPS[name](*args)
    with pytest.raises((IndexError, RuntimeError)):
        target = overload(name)
        target(*split_args(target, [torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in args])[0])


def test_runtime_imports_without_torch():
    runtime = Path(__file__).resolve().parent.parent / "runtime"
    code = ("import sys; sys.modules['torch'] = None; sys.modules['edgecompress'] = None\n"
            "import edgecompress_runtime.ops as ops, edgecompress_runtime.aten\n"
            "import numpy as np\n"
            "assert 'convolution.default' in ops.OPS and 'add' in ops.OPS\n"
            "assert ops.OPS['add.Tensor'](np.ones(2, np.float32), 1.5, 1).tolist() == [2.5, 2.5]\n"
            "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules if sys.modules[m])\n")
    env = {**os.environ, "PYTHONPATH": str(runtime)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr


# --- whole models: torch.export -> Core ATen -> these ops alone --------------------------

def _run_core_aten(model, *inputs):
    """Export ``model``, decompose to Core ATen and run every node with OPS (as bundle nodes carry
    their args: schema order, defaults filled in, literals as graph JSON stores them)."""
    import operator
    ep = torch.export.export(model.eval(), inputs).run_decompositions()
    sig = ep.graph_signature
    state = {**dict(model.named_parameters()), **dict(model.named_buffers()), **ep.constants}
    lifted = {**sig.inputs_to_parameters, **sig.inputs_to_buffers,
              **(getattr(sig, "inputs_to_lifted_tensor_constants", None) or {})}
    env, user = {}, iter(inputs)

    def value(a):
        if isinstance(a, torch.fx.Node):
            return env[a.name]
        if isinstance(a, (list, tuple)):
            return [value(x) for x in a]
        return to_json_value(a)

    for n in ep.graph.nodes:
        if n.op == "placeholder":
            t = state[lifted[n.name]] if n.name in lifted else next(user)
            env[n.name] = t.detach().numpy()
        elif n.op == "call_function" and n.target is operator.getitem:
            env[n.name] = env[n.args[0].name][n.args[1]]
        elif n.op == "call_function":
            name = op_name(n.target)
            assert name in OPS, f"Core ATen op {name} is not implemented"
            env[n.name] = OPS[name](*[value(a) for a in schema_args(n.target, n.args, n.kwargs)])
        elif n.op == "output":
            return [value(a) for a in n.args[0]]


class _CNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.c1, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, groups=4)
        self.c1d, self.fc = nn.Conv1d(8, 4, 3, dilation=2), nn.Linear(4, 5)

    def forward(self, x):
        f = torch.nn.functional
        x = f.max_pool2d(torch.relu(self.bn(self.c1(x))), 2)
        x = f.adaptive_avg_pool2d(f.hardswish(self.c2(x)), (1, 6)).flatten(2)
        return torch.log_softmax(self.fc(f.silu(self.c1d(x)).mean(-1)), -1)


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.emb, self.ln, self.gn = nn.Embedding(50, 16), nn.LayerNorm(16), nn.GroupNorm(4, 16)
        self.att = nn.MultiheadAttention(16, 4, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))

    def forward(self, ids):
        x = self.emb(ids)
        x = self.ln(x + self.att(x, x, x, need_weights=False)[0])
        x = self.gn((x + self.ff(x)).transpose(1, 2)).transpose(1, 2)
        return x.cumsum(1)[:, -1] + torch.topk(x, 3, dim=-1).values.sum((1, 2)).unsqueeze(-1), x.argmax(-1)


@pytest.mark.parametrize("make", [_CNN, _Block], ids=["cnn", "attention_block"])
def test_exported_model_runs_on_numpy_ops(make):
    torch.manual_seed(0)
    model = make().eval()
    if isinstance(model, _CNN):
        model.bn.running_mean.normal_()
        model.bn.running_var.uniform_(0.5, 2.0)
        inputs = (torch.randn(2, 3, 16, 16),)
    else:
        inputs = (torch.randint(0, 50, (2, 7)),)
    with torch.no_grad():
        want = model(*inputs)
    want = want if isinstance(want, tuple) else (want,)
    compare(tuple(_run_core_aten(model, *inputs)), tuple(want), make.__name__)
