"""fp16 tables and Linear weights: exact against a torch model with fp16-rounded weights through
every backend, exact bundle size, and the planner's fp16 candidate."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import edgecompress as ec
import edgecompress_runtime as ecr
from edgecompress.passes import PassConfig, plan_from_json
from edgecompress.passes.fp16 import Fp16Weights


def _fp16_reference(model):
    """The source model with every table and Linear weight rounded to fp16 (biases stay fp32)."""
    ref = copy.deepcopy(model).eval()
    with torch.no_grad():
        for mod in ref.modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Embedding, torch.nn.EmbeddingBag)):
                mod.weight.copy_(mod.weight.half().float())
    return ref


def test_fp16_bundle_matches_fp16_rounded_torch_model_in_every_backend(tmp_path, trained_dlrm, ctr_data):
    _, test_ds = ctr_data
    res = ec.compile(trained_dlrm, target="local", data=test_ds, output=tmp_path / "fp16.ecb",
                     plan=[Fp16Weights()], formats=["executorch", "litert"], progress=False)
    fp32 = ec.compile(trained_dlrm, target="local", data=test_ds, output=tmp_path / "fp32.ecb", plan=[],
                      formats=["numpy"], progress=False)
    m = ecr.load(res.path, backend="numpy")
    kinds = {p["kind"] for p in m.manifest["params"].values()}
    assert kinds == {"fp16", "fp32"}                          # tables + Linear weights fp16, biases fp32
    # exact size accounting: what the planner was told is the file on disk
    assert res.size_bytes == (tmp_path / "fp16.ecb").stat().st_size
    # each fp16 weight is half its fp32 bytes, in memory and in the bundle (app artifacts aside)
    loaded = m._backend.params
    n16 = sum(int(np.prod(p["shape"])) for p in m.manifest["params"].values() if p["kind"] == "fp16")
    assert sum(p.nbytes for p in loaded.values() if p.kind == "fp16") == 2 * n16
    assert abs((fp32.model_bytes - res.model_bytes) - 2 * n16) <= 0.01 * 2 * n16
    batch = {k: np.asarray(v[:300]) for k, v in test_ds.inputs.items()}
    ref = _fp16_reference(trained_dlrm)
    with torch.no_grad():
        want = ref(*[torch.as_tensor(batch[k]) for k in ("dense", "sparse")]).numpy().reshape(-1)   # logits
    for backend in ("numpy", "litert", "executorch"):
        got = np.asarray(ecr.load(res.path, backend=backend).predict(batch)).reshape(-1)
        np.testing.assert_allclose(got, want, atol=2e-5, err_msg=backend)
    # fp16 is not fp32: the rounding shows, so the comparison above could fail
    with torch.no_grad():
        unrounded = trained_dlrm.eval()(*[torch.as_tensor(batch[k]) for k in ("dense", "sparse")])
    assert np.abs(unrounded.numpy().reshape(-1) - want).max() > 1e-7
    arts = m.manifest["artifacts"]
    for fmt in ("executorch", "litert"):
        assert arts[fmt]["recipe"][0]["pass"] == "fp16_weights" and arts[fmt]["recipe"][0]["exact"], fmt
    assert "fp16 constants" in arts["executorch"]["recipe"][0]["as"]
    assert "stored as fp32" in arts["litert"]["recipe"][0]["as"]
    # the .pte holds the tables at 2 bytes a value, the .tflite at 4
    tables = sum(int(np.prod(p["shape"])) for p in m.manifest["params"].values() if p["role"] == "embedding")
    assert arts["litert"]["size_bytes"] - arts["executorch"]["size_bytes"] >= 2 * tables * 0.95


def test_fp16_config_checks_and_replay(trained_dlrm, ctr_data):
    with pytest.raises(ec.CompileError, match="fp16_weights: linear must be False or True"):
        Fp16Weights(linear=1.5)
    cfg = Fp16Weights(linear=False, tables=("embeddings.0.weight",))
    assert plan_from_json([cfg.to_dict()]) == [cfg]
    assert PassConfig.from_dict(cfg.to_dict()) == cfg


def test_fp16_refuses_weights_outside_its_range():
    from edgecompress.errors import CompileError
    from edgecompress.passes.fp16 import to_fp16
    with pytest.raises(CompileError, match="outside fp16's range"):
        to_fp16(np.array([[7e4]], np.float32), "t")


def test_planner_picks_fp16_when_it_fits_and_int8_costs_fidelity(trained_dlrm, ctr_data):
    """The planner's fp16 candidate: half the fp32 parameter bytes at (almost) its outputs. Scored by
    fidelity to the fp32 model (log loss against its probabilities), where int8 rows measurably lose and
    fp16 barely does, and with a budget fp32 misses, the planner picks fp16 (on held-out AUC of this model
    int8 rows lose nothing measurable, and there it picks the smaller quantized plans: both are real)."""
    from edgecompress.graph import lower
    from edgecompress.graph.io import head_logits
    from edgecompress.plan.latency import LatencyModel, shape_profile
    from edgecompress.plan.search import Planner
    from edgecompress.targets import load_target
    _, test_ds = ctr_data
    prog = lower(trained_dlrm, {k: np.asarray(test_ds.inputs[k][:8]) for k in ("dense", "sparse")})
    rows = {k: np.asarray(v[:2000]) for k, v in test_ds.inputs.items()}
    ex = prog.executor()
    p_fp32 = 1 / (1 + np.exp(-np.asarray(head_logits(ex.run(rows), prog.outputs, prog.metric_output)).reshape(-1)))

    z32 = np.log(p_fp32) - np.log1p(-p_fp32)
    entropy = np.logaddexp(0, z32) - p_fp32 * z32

    def fidelity(predict_fn):
        """Log loss against the fp32 model's probabilities, less its entropy (the KL divergence): 0 = fp32."""
        z = predict_fn(rows).astype(np.float64)
        return {"logloss": float(np.mean(np.logaddexp(0, z) - p_fp32 * z - entropy))}

    def size_fn(program, plan):
        return sum(p.nbytes for p in program.params.values())

    fp32_bytes = size_fn(prog, [])
    planner = Planner(prog, metric="logloss", evaluate_fn=fidelity, size_fn=size_fn,
                      latency=LatencyModel(load_target("local"), shape_profile(prog)), latency_batch=64,
                      memory_budget=int(fp32_bytes * 0.9), latency_budget=None, tolerance=1e-9, max_steps=4,
                      progress=False)
    result = planner.run()
    cands = {c.label: c for c in result.candidates}
    half, int8, full = cands["fp16"], cands["int8 rows + int8 Linear"], cands["fp32"]
    assert half.size_bytes <= fp32_bytes // 2 + 4 * 200          # fp32 biases stay
    # measured: fp32 ~1e-11 (float noise), fp16 6.5e-9, int8 rows + int8 Linear 6.2e-7
    assert abs(full.metric) < 1e-10 and half.metric < int8.metric / 30, (full.metric, half.metric, int8.metric)
    assert result.chosen is half
    assert [c.NAME for c in half.plan] == ["fp16_weights"] and half.plan[0].linear
