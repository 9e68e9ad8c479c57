"""The models and plans the calibration compiles and measures: probe models and
plans for the graph fit, and other DLRMs and plans for validation (so validation
measures the fitted model honestly), and the programs compile builds from them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def validation_plans() -> list[tuple[str, list]]:
    """Explicit plans that vary bits, kept rows, dims, MLP width and activation modes."""
    from ..passes import (DEFAULT_PLAN, EmbeddingDimReduce, EmbeddingRowPrune, EmbeddingRowwiseQuant,
                         LinearInt8Dynamic, LinearInt8Static, LinearInt8Weights, MLPNeuronPrune)
    return [
        ("fp32", []),
        ("int8", list(DEFAULT_PLAN)),
        ("rows-int4", [EmbeddingRowwiseQuant(bits=4)]),
        ("rows-int2+w8", [EmbeddingRowwiseQuant(bits=2), LinearInt8Weights()]),
        ("keep25%+int8", [EmbeddingRowPrune(keep_ratio=0.25), EmbeddingRowwiseQuant(bits=8)]),
        ("dim8", [EmbeddingDimReduce(dim=8)]),
        ("dim16+int4", [EmbeddingDimReduce(dim=16), EmbeddingRowwiseQuant(bits=4)]),
        ("mlp50%", [MLPNeuronPrune(keep_ratio=0.5)]),
        ("mlp25%+dyn8", [MLPNeuronPrune(keep_ratio=0.25), LinearInt8Dynamic()]),
        ("static8", [EmbeddingRowwiseQuant(bits=8), LinearInt8Static()]),
        ("all", [EmbeddingRowPrune(keep_ratio=0.5), EmbeddingDimReduce(dim=16), MLPNeuronPrune(keep_ratio=0.5),
                 EmbeddingRowwiseQuant(bits=4), LinearInt8Dynamic()]),
    ]


@dataclass
class ValidationModel:
    name: str
    model: object
    train: object
    test: object


def validation_models(small: bool = False, seed: int = 0) -> list[ValidationModel]:
    """Two DLRMs on seeded synthetic data (a small and a wider one), quickly trained."""
    import torch

    from ..data import synthetic_ctr
    from ..models.zoo import model_for_data
    from ..train import train
    out = []
    specs = [("dlrm-small", dict(embedding_dim=16, bottom_mlp=(32, 16), top_mlp=(32,)),
              (5000, 2000, 1000, 300, 50)),
             ("dlrm-wide", dict(embedding_dim=64, bottom_mlp=(256, 64), top_mlp=(256, 64)),
              (100_000, 20_000, 5000, 1000, 200, 50, 20, 10))]
    if small:
        specs = specs[:1]
    for name, kw, vocab in specs:
        data = synthetic_ctr(n=6000 if small else 20_000, vocab_sizes=vocab, dense_dim=8, seed=seed)
        tr, te = data.split((0.8, 0.2), seed=0)
        torch.manual_seed(seed)
        model = model_for_data("dlrm", tr, **kw)
        train(model, tr, epochs=1, batch_size=512, lr=3e-3, progress=False)
        out.append(ValidationModel(name, model.eval(), tr, te))
    return out


def programs(vm: ValidationModel, plans):
    """(plan name, plan, program after the plan) on the host, as compile builds them."""
    from ..graph import forward_input_names, lower
    from ..passes import PassContext, apply_plan
    names = forward_input_names(vm.model)
    example = {k: np.asarray(vm.test.inputs[k][:8]) for k in names}
    base = lower(vm.model, example)
    ctx = PassContext(teacher=vm.model, train_data=vm.train, calibration_data=vm.test)
    return base, [(pname, plan, apply_plan(base.copy(), list(plan), ctx)) for pname, plan in plans]


def probe_plans(dim: int) -> list[tuple[str, list]]:
    """Plans for the graph-fit probes (bits, kept rows, dims, MLP width, activation modes)."""
    from ..passes import (DEFAULT_PLAN, EmbeddingDimReduce, EmbeddingRowPrune, EmbeddingRowwiseQuant,
                         LinearInt8Dynamic, MLPNeuronPrune)
    return [
        ("fp32", []),
        ("int8", list(DEFAULT_PLAN)),
        ("keep50%+int4", [EmbeddingRowPrune(keep_ratio=0.5), EmbeddingRowwiseQuant(bits=4)]),
        ("mlp50%+dyn8", [MLPNeuronPrune(keep_ratio=0.5), LinearInt8Dynamic()]),
        (f"dim{max(dim // 4, 2)}+int8", [EmbeddingDimReduce(dim=max(dim // 4, 2)), EmbeddingRowwiseQuant(bits=8)]),
    ]


def probe_models(quick: bool = False, seed: int = 1) -> list[ValidationModel]:
    """Untrained models of other shapes than the validation DLRMs (latency does not depend
    on training): a narrow 3-table DLRM, a 6-table DLRM and a 10-table DeepFM."""
    import torch

    from ..data import synthetic_ctr
    from ..models.zoo import model_for_data
    specs = [("probe-dlrm-8x3", "dlrm", dict(embedding_dim=8, bottom_mlp=(16, 8), top_mlp=(16,)), (3000, 500, 40)),
             ("probe-dlrm-32x6", "dlrm", dict(embedding_dim=32, bottom_mlp=(128, 32), top_mlp=(128, 32)),
              (50_000, 8000, 2000, 300, 60, 12)),
             ("probe-deepfm-24x10", "deepfm", dict(embedding_dim=24, hidden=(96, 48)),
              (30_000, 10_000, 4000, 1500, 600, 250, 100, 40, 16, 6))]
    if quick:
        specs = specs[:2]
    out = []
    for name, arch, kw, vocab in specs:
        data = synthetic_ctr(n=3000, vocab_sizes=vocab, dense_dim=6, seed=seed)
        tr, te = data.split((0.7, 0.3), seed=seed)
        torch.manual_seed(seed)
        out.append(ValidationModel(name, model_for_data(arch, tr, **kw).eval(), tr, te))
    return out
