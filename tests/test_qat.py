"""Quantization-aware training: the converted bundle computes what the fake-quantized torch
model computed (every backend; learned per-row ranges and learned static int8 activations
included), padding rows stay exact, QAT beats post-training quantization at 4 and 2 bits on
held-out rows, and a plan replayed from the manifest gives the same bytes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import edgecompress as ec
import edgecompress_runtime as ecr
from edgecompress.data import synthetic_ctr
from edgecompress.graph import lower
from edgecompress.export.recipe import recipe
from edgecompress.graph.io import head_logits
from edgecompress.metrics import evaluate_ctr
from edgecompress.models.zoo import model_for_data
from edgecompress.passes import (EmbeddingRowwiseQuant, LinearInt8Weights, PassContext, apply_pass, apply_plan,
                                 plan_from_json)
from edgecompress.passes.qat import QAT, fake_quant_module, initial_ranges, train_fake_quant

INPUTS = ("dense", "sparse")


def _program(model, ds):
    return lower(model, {k: np.asarray(ds.inputs[k][:8]) for k in INPUTS})


def _fake_quant_logits(model, train_ds, config, batch):
    """The QAT student after training, run fake-quantized by torch (the weights before conversion)."""
    prog = _program(model, train_ds)
    record = train_fake_quant(prog, config, PassContext(teacher=model, train_data=train_ds))
    with torch.no_grad():
        out = fake_quant_module(prog, config, ranges=record["ranges"]).eval()(*[torch.as_tensor(batch[k])
                                                                                 for k in INPUTS])
    return out.numpy().reshape(-1), record


@pytest.mark.parametrize("bits,linear_int8,formats", [(2, False, ("executorch", "litert")), (1, True, ("litert",))])
def test_converted_bundle_matches_the_fake_quantized_model_in_every_backend(bits, linear_int8, formats, tmp_path,
                                                                             trained_dlrm, ctr_data):
    """Learned ranges: 2-bit rows (learned [lo, hi] per row) through numpy, LiteRT and ExecuTorch; 1-bit
    sign rows (learned s per row) + int8 Linear through numpy and LiteRT (the .pte runs int8 Linear layers
    with dynamic int8 activations, an approximation its recipe names, and stores 1-bit rows as fp32: both
    covered by test_export_artifacts' forms). The plain min/max rows are EmbeddingRowwiseQuant's form."""
    train_ds, test_ds = ctr_data
    config = QAT(bits=bits, max_steps=6, linear_int8=linear_int8, learn_ranges=True, lr=1e-2)
    res = ec.compile(trained_dlrm, target="local", data=test_ds, train_data=train_ds, output=tmp_path / "q.ecb",
                     plan=[config], formats=list(formats), seed=0, progress=False)
    assert res.plan == [config]
    batch = {k: np.asarray(test_ds.inputs[k][:300]) for k in INPUTS}
    want, record = _fake_quant_logits(trained_dlrm, train_ds, config, batch)
    assert record["steps"] == 6 and len(record["tables"]) == 5
    m = ecr.load(res.path, backend="numpy")
    params = m.manifest["params"]
    assert {(params[t]["kind"], params[t]["bits"]) for t in record["tables"]} == {("rowwise", bits)}
    assert {params[w]["kind"] for w in record["linears"]} == ({"channel_int8"} if linear_int8 else set())
    # the ranges were trained: they moved from where they started (clip search / mean |w|)
    start = initial_ranges(_program(trained_dlrm, train_ds), config, train_ds)["tables"]
    assert max(np.abs(record["ranges"]["tables"][t][0] - start[t][0]).max() for t in start) > 1e-4
    for backend in ("numpy",) + formats:
        got = ecr.load(res.path, backend=backend).predict(batch).reshape(-1)
        np.testing.assert_allclose(got, want, atol=2e-5, err_msg=backend)
        if backend != "numpy":
            assert m.manifest["artifacts"][backend]["approximations"] == []
    # the fake-quantized model is not the fp32 one: the comparisons above can fail
    with torch.no_grad():
        fp32 = trained_dlrm.eval()(*[torch.as_tensor(batch[k]) for k in INPUTS]).numpy().reshape(-1)
    assert np.abs(fp32 - want).max() > 1e-2


@pytest.mark.parametrize("bits", [2, 1])
def test_padding_rows_stay_exact(bits):
    data = synthetic_ctr(n=2000, vocab_sizes=(300, 200), dense_dim=3, multi_hot=3, seed=1)
    torch.manual_seed(0)
    model = model_for_data("dlrm", data, embedding_dim=8, bottom_mlp=(8,), top_mlp=(8,)).eval()
    prog = _program(model, data)
    assert prog.padding_rows, "the multi-hot DLRM has padding rows"
    out = apply_pass(prog.copy(), QAT(bits=bits, max_steps=5, batch_size=256, lr=0.05),
                     ctx=PassContext(teacher=model, train_data=data))
    for table, rows in prog.padding_rows.items():
        p = out.params[table]
        assert p.kind == "rowwise" and p.bits == bits
        before = prog.params[table].arrays["data"][list(rows)]
        np.testing.assert_array_equal(p.to_runtime(table).gather(np.array(list(rows))), before)
        # other rows did move (lr 0.05): the check above could fail
        assert not np.array_equal(p.to_runtime(table).dense(), prog.params[table].arrays["data"])


def _tiny_model():
    data = synthetic_ctr(n=2000, vocab_sizes=(300, 200), dense_dim=3, multi_hot=3, seed=1)
    torch.manual_seed(0)
    return data, model_for_data("dlrm", data, embedding_dim=8, bottom_mlp=(8,), top_mlp=(8,)).eval()


def test_learned_int8_activations_convert_to_static_int8_linear(tmp_path):
    """QAT with static int8 Linear activations (scales learned) + learned 4-bit ranges: the bundle holds
    LinearInt8Static's form with the learned scales; numpy and LiteRT (fp32 ROUND of the inputs with the
    plan's scales, int8 weights) compute what the fake-quantized torch model computed; ExecuTorch's XNNPACK
    static int8 recalibrates its scales: an approximation its recipe names (test_export_artifacts runs a
    static .pte; not exported here to keep this test short)."""
    data, model = _tiny_model()
    train_ds, test_ds = data.split((0.7, 0.3), seed=0)
    config = QAT(bits=4, max_steps=8, batch_size=128, lr=1e-2, learn_ranges=True, act_int8=True)
    res = ec.compile(model, target="local", data=test_ds, train_data=train_ds, output=tmp_path / "a.ecb",
                     plan=[config], formats=["litert"], seed=0, progress=False)
    batch = {k: np.asarray(test_ds.inputs[k][:300]) for k in INPUTS}
    prog = _program(model, train_ds)
    record = train_fake_quant(prog, config, PassContext(teacher=model, train_data=train_ds))
    with torch.no_grad():
        want = fake_quant_module(prog, config, ranges=record["ranges"]).eval()(
            *[torch.as_tensor(batch[k]) for k in INPUTS]).numpy().reshape(-1)
    m = ecr.load(res.path, backend="numpy")
    acts = record["ranges"]["acts"]
    assert set(acts) == set(record["linears"]) and len(acts) >= 3
    for name, scale in acts.items():
        assert m.manifest["params"][name]["act"] == "static"
        assert m.bundle.array(m.manifest["params"][name]["members"]["act_scale"])[0] == scale
    start = initial_ranges(_program(model, train_ds), config, train_ds)["acts"]
    assert max(abs(float(acts[n]) / float(start[n]) - 1) for n in acts) > 1e-3     # the scales were trained
    for backend in ("numpy", "litert"):
        got = ecr.load(res.path, backend=backend).predict(batch).reshape(-1)
        np.testing.assert_allclose(got, want, atol=2e-5, err_msg=backend)
    arts = m.manifest["artifacts"]
    assert arts["litert"]["approximations"] == [] and "static int8" in arts["litert"]["precision"]
    converted = apply_pass(_program(model, train_ds), config, ctx=PassContext(teacher=model, train_data=train_ds))
    assert converted.linear_activation_mode() == "static"
    steps, approx = recipe(converted, [config], "executorch")
    assert len(approx) == 1 and approx[0].startswith("qat: XNNPACK recalibrates the static activation scales")
    # the int8 activations are not fp32 ones: the comparison above can fail
    fp32_acts = QAT(bits=4, max_steps=8, batch_size=128, lr=1e-2, learn_ranges=True)
    with torch.no_grad():
        other = fake_quant_module(prog, fp32_acts, ranges={**record["ranges"], "acts": {}}).eval()(
            *[torch.as_tensor(batch[k]) for k in INPUTS]).numpy().reshape(-1)
    assert np.abs(other - want).max() > 1e-4


def test_qat_beats_post_training_quantization_on_held_out_rows(trained_dlrm, ctr_data):
    """Measured (test split, 6,000 rows; QAT 1 epoch, lr 1e-3, int8 Linear in both): int4 PTQ with
    clip search -0.00015 AUC vs QAT +0.00005; int2 PTQ -0.0021 vs QAT -0.0010."""
    train_ds, test_ds = ctr_data
    prog = _program(trained_dlrm, train_ds)
    ctx = PassContext(teacher=trained_dlrm, train_data=train_ds)

    def auc(p):
        ex = p.executor()
        return evaluate_ctr(lambda f: np.asarray(head_logits(ex.run(f), p.outputs, p.metric_output)).reshape(-1),
                            test_ds)["auc"]
    for bits, margin in ((4, 0.0), (2, 5e-4)):
        ptq = auc(apply_plan(prog.copy(), [EmbeddingRowwiseQuant(bits=bits, clip_search=True), LinearInt8Weights()]))
        qat = auc(apply_plan(prog.copy(), [QAT(bits=bits)], ctx))
        assert qat > ptq + margin, (bits, qat, ptq)


def test_replaying_the_manifest_plan_gives_the_same_bytes(tmp_path, trained_dlrm, ctr_data):
    train_ds, test_ds = ctr_data
    config = QAT(bits=4, max_steps=4, seed=7, learn_ranges=True, act_int8=True)
    first = ec.compile(trained_dlrm, target="local", data=test_ds, train_data=train_ds, output=tmp_path / "a.ecb",
                       plan=[config], formats=["numpy"], seed=0, progress=False)
    plan = plan_from_json(ecr.load(first.path, backend="numpy").manifest["plan"])
    assert plan == [config]
    ec.compile(trained_dlrm, target="local", data=test_ds, train_data=train_ds, output=tmp_path / "b.ecb",
               plan=plan, formats=["numpy"], seed=0, progress=False)
    assert (tmp_path / "a.ecb").read_bytes() == (tmp_path / "b.ecb").read_bytes()
    ec.compile(trained_dlrm, target="local", data=test_ds, train_data=train_ds, output=tmp_path / "c.ecb",
               plan=[QAT(bits=4, max_steps=4, seed=8, learn_ranges=True, act_int8=True)], formats=["numpy"], seed=0,
               progress=False)
    assert (tmp_path / "c.ecb").read_bytes() != (tmp_path / "a.ecb").read_bytes()      # the seed matters


def test_qat_needs_training_rows_and_checks_its_settings(trained_dlrm, ctr_data):
    train_ds, _ = ctr_data
    prog = _program(trained_dlrm, train_ds)
    with pytest.raises(ec.CompileError, match="qat needs training rows"):
        apply_pass(prog, QAT(), ctx=PassContext(teacher=trained_dlrm))
    with pytest.raises(ec.CompileError, match="needs the source model"):
        apply_pass(prog, QAT(), ctx=PassContext(train_data=train_ds))
    with pytest.raises(ec.CompileError, match="qat: bits must be 8, 4, 2 or 1, got 3"):
        QAT(bits=3)
    with pytest.raises(ec.CompileError, match="act_int8"):
        QAT(act_int8=True, linear_int8=False)
    quantized = apply_pass(prog.copy(), EmbeddingRowwiseQuant(bits=8))
    with pytest.raises(ec.CompileError, match="put qat before other quantization passes"):
        apply_pass(quantized, QAT(), ctx=PassContext(teacher=trained_dlrm, train_data=train_ds))
