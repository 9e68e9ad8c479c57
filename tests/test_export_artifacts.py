"""App artifacts: every zoo model as fp32, int8 and int4, exported to ExecuTorch
(.pte) and LiteRT (.tflite) by compile(), loaded by the real runtimes through
edgecompress_runtime.load and checked against the host; plus the failure modes
(missing toolchain, parity over tolerance, backend not installed / not carried),
``bench --backend all`` and ``edgecompress package``.

Needs the export extra (pip install 'edgecompress[export]'); skipped without it.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import edgecompress as ec
import edgecompress_runtime as ecr
from edgecompress.data import synthetic_ctr
from edgecompress.data.movielens import leave_last_out
from edgecompress.errors import CompileError
from edgecompress.export.artifacts import available_formats, build_artifacts
from edgecompress.models.zoo import model_for_data
from edgecompress.passes import EmbeddingRowwiseQuant, LinearInt8Weights
from edgecompress.targets import load_target
from edgecompress.train import train
from edgecompress_runtime.errors import BackendError

pytestmark = pytest.mark.skipif(any(available_formats()[f] for f in ("executorch", "litert")),
                                reason="needs pip install 'edgecompress[export]'")

FORMATS = ["numpy", "executorch", "litert"]
PLANS = {"fp32": [], "int8": [EmbeddingRowwiseQuant(bits=8), LinearInt8Weights()],
         "int4": [EmbeddingRowwiseQuant(bits=4), LinearInt8Weights()]}
CASES = [("dlrm", "ctr"), ("dlrm", "multi_hot"), ("deepfm", "ctr"), ("wide_deep", "ctr"),
         ("two_tower", "retrieval"), ("neumf", "retrieval")]


@pytest.fixture(scope="module")
def target():
    # two LiteRT signatures keep the exports quick; prefer the app runtimes for "auto"
    return dataclasses.replace(load_target("local"), batch_sizes=(1, 256), backends=("litert", "executorch", "numpy"))


@pytest.fixture(scope="module")
def datasets():
    rng = np.random.default_rng(0)
    n_users, n_items, n = 120, 200, 4000
    user = rng.integers(0, n_users, n)
    item = (user * 7 + rng.integers(0, 20, n)) % n_items
    return {"ctr": synthetic_ctr(n=4000, vocab_sizes=(500, 300, 100), dense_dim=4, seed=7).split((0.7, 0.3)),
            "multi_hot": synthetic_ctr(n=3000, vocab_sizes=(400, 200, 50), dense_dim=3, multi_hot=3,
                                       seed=8).split((0.7, 0.3)),
            "retrieval": leave_last_out(user, item, rng.random(n), n_users, n_items)}


@pytest.fixture(scope="module")
def models(datasets):
    cache = {}

    def get(name, data_key):
        if (name, data_key) not in cache:
            data = datasets[data_key]
            train_ds, eval_data = data if isinstance(data, tuple) else (data.train, data)
            torch.manual_seed(0)
            model = model_for_data(name, train_ds)
            train(model, train_ds, epochs=1, batch_size=256, lr=3e-3, progress=False)
            cache[(name, data_key)] = (model.eval(), eval_data)
        return cache[(name, data_key)]
    return get


@pytest.fixture(scope="module")
def compiled(models, target, tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts")
    cache = {}

    def get(name, data_key, precision):
        key = (name, data_key, precision)
        if key not in cache:
            model, eval_data = models(name, data_key)
            cache[key] = ec.compile(model, target=target, data=eval_data, output=out / f"{name}-{data_key}-{precision}.ecb",
                                    plan=PLANS[precision], formats=FORMATS, progress=False)
        return cache[key]
    return get


def _odd_batch(ref: dict, n: int = 300) -> dict:
    idx = np.arange(n) % len(next(iter(ref.values())))
    return {k: v[idx] for k, v in ref.items()}


@pytest.mark.parametrize("precision", list(PLANS))
@pytest.mark.parametrize("name,data_key", CASES, ids=[f"{n}-{d}" for n, d in CASES])
def test_zoo_model_artifacts_run_in_real_runtimes(name, data_key, precision, compiled):
    res = compiled(name, data_key, precision)
    # these zoo models are untrained on purpose (export is what is tested): that note is expected
    assert not [w for w in res.warnings if "looks untrained" not in w]
    numpy_model = ecr.load(res.path, backend="numpy")
    arts = numpy_model.manifest["artifacts"]
    assert set(arts) == {"executorch", "litert"}
    ref_in, ref_out = numpy_model.reference()
    batch = _odd_batch(ref_in)                      # 300 rows: LiteRT runs 256, then 44 padded to 256
    want = numpy_model.predict(batch)
    for backend in ("executorch", "litert"):
        meta = arts[backend]
        m = ecr.load(res.path, backend=backend)
        assert m.backend == backend
        parity = m.check_parity()
        assert parity["ok"], (backend, parity)
        assert parity["max_abs_diff"] == pytest.approx(meta["parity"]["max_abs_diff"], abs=1e-6)
        assert meta["size_bytes"] == len(m.bundle.members[meta["member"]])
        assert meta["toolchain"]["torch"].startswith("2.13")
        got = m.predict(batch)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= meta["parity"]["tolerance"]
        one = m.predict({k: v[:1] for k, v in batch.items()})
        assert np.abs(one - want[:1]).max() <= meta["parity"]["tolerance"]
        # metrics measured through the artifact agree with the numpy bundle's
        for k, v in res.metrics_after.items():
            if isinstance(v, float):
                assert meta["metrics"][k] == pytest.approx(v, abs=0.02), (backend, k)
    if precision == "fp32":
        for backend in ("executorch", "litert"):
            assert arts[backend]["parity"]["max_abs_diff"] < 1e-4
            assert arts[backend]["approximations"] == []
    else:
        # the plan's own codes are in the artifact: LiteRT is exact, and quantized tables shrink both
        assert arts["litert"]["parity"]["max_abs_diff"] < 1e-4
        fp32 = compiled(name, data_key, "fp32").path
        fp32_arts = ecr.load(fp32, backend="numpy").manifest["artifacts"]
        assert arts["executorch"]["size_bytes"] < fp32_arts["executorch"]["size_bytes"]
        assert any("embedding_" in op for op in arts["executorch"]["ops"])


def test_int2_rows_are_exact_in_both_formats(compiled, models, target, tmp_path):
    model, eval_data = models("dlrm", "ctr")
    res = ec.compile(model, target=target, data=eval_data, output=tmp_path / "int2.ecb",
                     plan=[EmbeddingRowwiseQuant(bits=2)], formats=FORMATS, progress=False)
    arts = ecr.load(res.path, backend="numpy").manifest["artifacts"]
    for backend in ("executorch", "litert"):
        assert arts[backend]["approximations"] == []
        assert arts[backend]["parity"]["max_abs_diff"] < 1e-4
        assert ecr.load(res.path, backend=backend).check_parity()["ok"]
    assert "embedding_2bit" in " ".join(arts["executorch"]["ops"])


def test_auto_backend_follows_target_preference(compiled, monkeypatch):
    path = compiled("dlrm", "ctr", "int8").path
    assert ecr.load(path).backend == "litert"
    monkeypatch.setenv("EDGECOMPRESS_HIDE_PACKAGES", "ai_edge_litert,tflite_runtime")
    assert ecr.load(path).backend == "executorch"
    monkeypatch.setenv("EDGECOMPRESS_HIDE_PACKAGES", "ai_edge_litert,tflite_runtime,executorch")
    assert ecr.load(path).backend == "numpy"


def test_backend_not_installed_or_not_carried(compiled, monkeypatch, tmp_path, models):
    path = compiled("dlrm", "ctr", "int8").path
    monkeypatch.setenv("EDGECOMPRESS_HIDE_PACKAGES", "executorch")
    with pytest.raises(BackendError, match=r"'executorch' is not installed.*installed: numpy, litert"):
        ecr.load(path, backend="executorch")
    monkeypatch.delenv("EDGECOMPRESS_HIDE_PACKAGES")
    model, eval_data = models("dlrm", "ctr")
    plain = ec.compile(model, target="local", data=eval_data, output=tmp_path / "plain.ecb", plan=[],
                       formats=["numpy"], progress=False)
    with pytest.raises(BackendError, match=r"carries no litert artifact.*carries: numpy"):
        ecr.load(plain.path, backend="litert")
    with pytest.raises(BackendError, match="unknown backend"):
        ecr.load(plain.path, backend="coreml")


def _program(model, eval_data, plan):
    from edgecompress.graph import lower
    from edgecompress.graph.torch_exec import ProgramModule
    from edgecompress.passes import apply_plan
    ds = getattr(eval_data, "train", eval_data)
    inputs = {k: np.asarray(v[:64]) for k, v in ds.inputs.items()}
    program = apply_plan(lower(model, {k: v[:8] for k, v in inputs.items()}), plan)
    with torch.no_grad():
        out = ProgramModule(program)(*[torch.as_tensor(inputs[k]) for k in program.graph["inputs"]])
    return program, inputs, out.numpy()


def test_missing_toolchain_warns_and_other_formats_still_built(models, target, monkeypatch):
    model, eval_data = models("dlrm", "ctr")
    program, inputs, out = _program(model, eval_data, PLANS["int8"])
    monkeypatch.setenv("EDGECOMPRESS_HIDE_PACKAGES", "litert_torch")
    assert "edgecompress[export]" in available_formats()["litert"]
    assert "litert_torch missing" in available_formats()["litert"]
    assert available_formats()["executorch"] is None
    monkeypatch.delenv("EDGECOMPRESS_FORMATS", raising=False)       # the default: every installed format
    arts, warnings = build_artifacts(program, PLANS["int8"], target=target, reference_inputs=inputs,
                                     reference_outputs=out, progress=False)
    assert [a.format for a in arts] == ["executorch"]
    assert len(warnings) == 1 and "litert" in warnings[0] and "pip install 'edgecompress[export]'" in warnings[0]
    assert arts[0].meta["parity"]["ok"] and arts[0].member == "artifacts/model.pte"


def test_parity_over_tolerance_fails_explicit_format_and_drops_default(models, target, monkeypatch):
    model, eval_data = models("dlrm", "ctr")
    program, inputs, out = _program(model, eval_data, [])
    wrong = out + 0.5                        # a host reference the artifact cannot match
    with pytest.raises(CompileError, match=r"litert artifact differs from the host model by 0\.5"):
        build_artifacts(program, [], target=target, reference_inputs=inputs, reference_outputs=wrong,
                        formats=["numpy", "litert"], progress=False)
    monkeypatch.setenv("EDGECOMPRESS_FORMATS", "litert")          # a default, not an explicit request
    arts, warnings = build_artifacts(program, [], target=target, reference_inputs=inputs,
                                     reference_outputs=wrong, progress=False)
    assert arts == [] and len(warnings) == 1
    assert "differs from the host model by 0.5" in warnings[0] and "without a litert artifact" in warnings[0]
    with pytest.raises(CompileError, match="unknown format 'onnx'"):
        build_artifacts(program, [], target=target, reference_inputs=inputs, reference_outputs=out,
                        formats=["onnx"], progress=False)


def test_bench_all_backends_side_by_side(compiled, tmp_path, capsys):
    from edgecompress_runtime.cli import main
    path = compiled("dlrm", "multi_hot", "int8").path
    out = tmp_path / "bench.json"
    assert main(["bench", str(path), "--backend", "all", "--batch", "1,70", "--warmup", "1", "--iters", "3",
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["backends"] == ["numpy", "litert", "executorch"]
    for r in res["results"]:
        assert r["schema"] == "edgecompress.bench/1" and r["parity"]["ok"]
        assert [x["batch"] for x in r["latency"]] == [1, 70]
    text = capsys.readouterr().out
    assert "litert" in text and "executorch" in text and "b=70 p50/p99 ms" in text
    single = tmp_path / "one.json"
    assert main(["bench", str(path), "--backend", "litert", "--batch", "1", "--iters", "2", "--warmup", "0",
                 "--json", str(single)]) == 0
    one = json.loads(single.read_text())
    assert one["backend"] == "litert" and one["schema"] == "edgecompress.bench/1"


def test_app_package(compiled, tmp_path):
    from edgecompress.cli import main
    path = compiled("two_tower", "retrieval", "int8").path
    assert main(["package", str(path), "--android", str(tmp_path / "android"), "--ios", str(tmp_path / "ios")]) == 0
    bundle = ecr.read_bundle(path)
    for platform, first in (("android", "litert"), ("ios", "executorch")):
        d = tmp_path / platform
        spec = json.loads((d / "input_spec.json").read_text())
        assert list(spec["artifacts"])[0] == first
        assert (d / "model.tflite").read_bytes() == bundle.members["artifacts/model.tflite"]
        assert (d / "model.pte").read_bytes() == bundle.members["artifacts/model.pte"]
        assert [i["name"] for i in spec["inputs"]] == ["user_id", "item_id"]
        assert spec["artifacts"]["litert"]["inputs"][0]["dtype"] == "int32"
        ids = json.loads((d / "id_maps.json").read_text())
        assert ids["user_id"]["valid_ids"] == [0, 119] and ids["user_id"]["unknown_ids"] == "reject"
        note = (d / "INTEGRATION.md").read_text()
        assert "kernels_quantized" in note and "`b256` (batch 256)" in note
        ref = json.loads((d / "reference_inputs.json").read_text())
        assert len(ref["outputs"]) == len(ref["inputs"]["user_id"])
    plain = compiled("dlrm", "ctr", "fp32").path     # has artifacts; a numpy-only bundle is refused:
    bundle_np = tmp_path / "np.ecb"
    from edgecompress_runtime.bundle_writer import write_bundle
    b = ecr.read_bundle(plain)
    man = {k: v for k, v in b.manifest.items() if k not in ("artifacts", "members", "format", "format_version")}
    write_bundle(bundle_np, man, {k: v for k, v in b.members.items() if not k.startswith("artifacts/")})
    assert main(["package", str(bundle_np), "--android", str(tmp_path / "x")]) == 2


def test_litert_backend_runs_without_torch(compiled):
    """The device side of the litert backend is torch-free: edgecompress_runtime + ai-edge-litert."""
    import subprocess
    import sys
    path = compiled("dlrm", "ctr", "int4").path
    code = ("import sys, edgecompress_runtime as ecr\n"
            "from edgecompress_runtime import backends\n"
            "assert 'litert' in backends.available()\n"
            f"m = ecr.load({str(path)!r}, backend='litert')\n"
            "p = m.check_parity()\n"
            "print(p['ok'], sorted(x for x in ('torch', 'edgecompress', 'executorch') if x in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "True []"


STRUCTURAL = {
    # pruned rows (remap), reduced dims (projection), pruned MLP widths, int4 rows, dynamic int8 Linear
    "prune-reduce-int4-dynamic": lambda P: [P.EmbeddingRowPrune(keep_ratio=0.5), P.EmbeddingDimReduce(dim=8),
                                            P.MLPNeuronPrune(keep_ratio=0.5), P.EmbeddingRowwiseQuant(bits=4),
                                            P.LinearInt8Dynamic()],
    # only the larger Linear layers quantized
    "partial-dynamic": lambda P: [P.EmbeddingRowwiseQuant(bits=8), P.LinearInt8Dynamic(min_params=1000)],
}


@pytest.mark.parametrize("plan_name", list(STRUCTURAL))
def test_structural_plans_export(plan_name, models, target, tmp_path):
    import edgecompress.passes as P
    model, eval_data = models("dlrm", "ctr")
    plan = STRUCTURAL[plan_name](P)
    # row pruning needs id frequencies from training rows; this test is about export, the eval rows stand in
    res = ec.compile(model, target=target, data=eval_data, train_data=eval_data, output=tmp_path / "s.ecb",
                     plan=plan, formats=FORMATS, progress=False)
    arts = ecr.load(res.path, backend="numpy").manifest["artifacts"]
    assert set(arts) == {"executorch", "litert"}, res.warnings
    for backend in ("executorch", "litert"):
        assert [s["pass"] for s in arts[backend]["recipe"]] == [c.NAME for c in plan]
        assert ecr.load(res.path, backend=backend).check_parity()["ok"]
    if plan_name == "partial-dynamic":
        # LiteRT selects Linear layers by op type only: it keeps them all fp32 and says so
        assert arts["litert"]["approximations"] and "Linear fp32" in arts["litert"]["precision"]
        assert arts["executorch"]["approximations"] == []
    else:
        assert arts["litert"]["tflite_runtime_ok"] is False          # dynamic-range int8 FULLY_CONNECTED


def test_static_int8_linear_in_executorch(models, target):
    """XNNPACK static int8 (pt2e, calibrated on the reference rows), said to be an approximation."""
    import edgecompress.passes as P
    model, eval_data = models("dlrm", "ctr")
    plan = [P.EmbeddingRowwiseQuant(bits=8), P.LinearInt8Static()]
    from edgecompress.graph import lower
    from edgecompress.graph.torch_exec import ProgramModule
    from edgecompress.passes import PassContext, apply_plan
    ds = eval_data
    inputs = {k: np.asarray(v[:64]) for k, v in ds.inputs.items()}
    program = lower(model, {k: v[:8] for k, v in inputs.items()})
    program = apply_plan(program, plan, PassContext(calibration_data=ds, train_data=ds))
    with torch.no_grad():
        out = ProgramModule(program)(*[torch.as_tensor(inputs[k]) for k in program.graph["inputs"]]).numpy()
    arts, warnings = build_artifacts(program, plan, target=target, reference_inputs=inputs, reference_outputs=out,
                                     formats=["executorch"], progress=False)
    meta = arts[0].meta
    assert any("static" in a for a in meta["approximations"]) and "static int8" in meta["precision"]
    assert meta["parity"]["ok"], meta["parity"]


def test_artifact_worse_than_the_bundle_on_test_rows_is_refused(models, target, monkeypatch):
    from edgecompress.metrics import evaluate_ctr
    model, eval_data = models("dlrm", "ctr")
    program, inputs, out = _program(model, eval_data, PLANS["int8"])
    evaluate = lambda fn: evaluate_ctr(fn, eval_data)          # noqa: E731
    # the numpy bundle "scored" 0.999: an artifact 0.2 below it loses more than the plan's tolerance
    gate = ("auc", 0.999, True, 5e-4)
    with pytest.raises(CompileError, match=r"litert artifact loses 0\.\d+ auc against the numpy bundle on the "
                                           r"test rows \(0\.\d{4} vs 0\.9990; the plan's tolerance is 0\.0005"):
        build_artifacts(program, PLANS["int8"], target=target, reference_inputs=inputs, reference_outputs=out,
                        formats=["litert"], evaluate=evaluate, gate=gate, progress=False)
    monkeypatch.setenv("EDGECOMPRESS_FORMATS", "litert")          # a default: dropped with the numbers
    arts, warnings = build_artifacts(program, PLANS["int8"], target=target, reference_inputs=inputs,
                                     reference_outputs=out, evaluate=evaluate, gate=gate, progress=False)
    assert arts == [] and "loses" in warnings[0] and "without a litert artifact" in warnings[0]
    # within the tolerance of what the bundle measured, it ships with its metrics
    from edgecompress.graph.torch_exec import ProgramModule
    host = ProgramModule(program).eval()

    def host_predict(feeds):
        with torch.no_grad():
            return host(*[torch.as_tensor(feeds[k]) for k in program.graph["inputs"]]).numpy().reshape(-1)
    auc = evaluate_ctr(host_predict, eval_data)["auc"]
    arts, warnings = build_artifacts(program, PLANS["int8"], target=target, reference_inputs=inputs,
                                     reference_outputs=out, formats=["litert"], evaluate=evaluate,
                                     gate=("auc", auc, True, 5e-4), progress=False)
    assert [a.format for a in arts] == ["litert"] and abs(arts[0].meta["metrics"]["auc"] - auc) <= 5e-4


def test_corrupt_artifact_with_valid_hashes_is_a_backend_error_and_auto_falls_back(compiled, tmp_path):
    from edgecompress.export.bundle import BundleDraft
    from edgecompress_runtime.bundle import read_bundle
    src = read_bundle(compiled("dlrm", "ctr", "fp32").path)
    manifest = {k: v for k, v in src.manifest.items() if k not in ("format", "format_version", "members")}
    members = dict(src.members)
    members["artifacts/model.tflite"] = b"TFL3" + bytes(range(256)) * 40          # hashes recomputed: an author's edit
    members["artifacts/model.pte"] = b"\x00" * 4096
    path = tmp_path / "corrupt.ecb"
    BundleDraft(manifest, members).write(path)
    for name, says in (("litert", "the bundle's litert artifact does not load in its runtime"),
                       ("executorch", "ExecuTorch could not load the bundle's .pte")):
        with pytest.raises(BackendError, match=says):
            ecr.load(path, backend=name)
    model = ecr.load(path)                                   # target order: litert, executorch, numpy
    assert model.backend == "numpy"
    assert "litert failed to load" in model.backend_reason and "executorch failed to load" in model.backend_reason
    assert model.check_parity()["ok"]
