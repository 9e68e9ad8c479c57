"""``edgecompress package``: app packages checked against the artifacts' real signatures.

One real bundle: a DLRM trained on MovieLens-100k's CTR view (raw user / item ids, string
categories, standardised dense features), compiled with a .tflite and a .pte. The test reads
the signatures itself (LiteRT Python interpreter, ExecuTorch method metadata) and checks the
generated Kotlin / Swift name the same tensors with the same dtypes and shapes; that each
platform folder holds only its own files; that input_spec.json types everything; that the
id maps round-trip through the runtime (including the OOV row); and the dense statistics.
kotlinc / swiftc are not installed here: the sources get a syntax sanity check (balanced
brackets outside strings and comments, no template placeholder left).

Needs the export extra (pip install 'edgecompress[export]'); skipped without it.
"""
from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch

import edgecompress as ec
import edgecompress_runtime as ecr
from edgecompress.cli import main
from edgecompress.data import load_movielens, movielens_ctr
from edgecompress.export.artifacts import available_formats
from edgecompress.models.zoo import model_for_data
from edgecompress.targets import load_target
from edgecompress.train import train

pytestmark = pytest.mark.skipif(any(available_formats()[f] for f in ("executorch", "litert")),
                                reason="needs pip install 'edgecompress[export]'")
ET_DTYPES = {3: "int32", 4: "int64", 6: "float32"}
KOTLIN_ARRAYS = {"float32": "FloatArray", "int32": "IntArray", "int64": "LongArray"}
SWIFT_SCALARS = {"float32": "Float", "int32": "Int32", "int64": "Int64"}


@pytest.fixture(scope="module")
def movielens():
    ds = movielens_ctr()
    train_ds, test_ds = ds.split((0.8, 0.2), seed=0)
    return ds, train_ds.take(np.arange(20_000)), test_ds.take(np.arange(3_000))


@pytest.fixture(scope="module")
def bundle(movielens, tmp_path_factory):
    _, train_ds, test_ds = movielens
    torch.manual_seed(0)
    model = model_for_data("dlrm", train_ds, embedding_dim=8, bottom_mlp=(16,), top_mlp=(16,))
    train(model, train_ds, epochs=1, batch_size=512, lr=3e-3, progress=False)
    target = dataclasses.replace(load_target("local"), batch_sizes=(1, 64), backends=("litert", "executorch", "numpy"))
    nf = test_ds.inputs["sparse"].shape[1]
    res = ec.compile(model.eval(), target=target, data=test_ds, train_data=train_ds, plan=[], progress=False,
                     output=tmp_path_factory.mktemp("app") / "ml.ecb", formats=["numpy", "executorch", "litert"],
                     oov_rows={"sparse": [0] * nf})
    return res.path


@pytest.fixture(scope="module")
def packaged(bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("pkg")
    assert main(["package", str(bundle), "--android", str(out / "android"), "--ios", str(out / "ios"),
                 "--kotlin-package", "com.example.recsys"]) == 0
    return out


def _litert_signature(data: bytes) -> dict:
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=data)
    sigs = {}
    for key, names in it.get_signature_list().items():
        r = it.get_signature_runner(key)
        ins, outs = r.get_input_details(), r.get_output_details()
        sigs[key] = {"inputs": [(n, np.dtype(ins[n]["dtype"]).name, [int(d) for d in ins[n]["shape"]])
                                for n in names["inputs"]],
                     "outputs": [(n, np.dtype(outs[n]["dtype"]).name, [int(d) for d in outs[n]["shape"]])
                                 for n in names["outputs"]]}
    return sigs


def _executorch_meta(data: bytes) -> dict:
    import importlib
    from executorch.runtime import Runtime
    importlib.import_module("executorch.kernels.quantized")
    mm = Runtime.get().load_program(data).metadata("forward")
    t = [mm.input_tensor_meta(i) for i in range(mm.num_inputs())]
    o = [mm.output_tensor_meta(i) for i in range(mm.num_outputs())]
    return {"inputs": [(ET_DTYPES[int(x.dtype())], list(x.sizes())) for x in t],
            "outputs": [(ET_DTYPES[int(x.dtype())], list(x.sizes())) for x in o]}


def _specs(text: str, lang: str, block: str) -> list[tuple]:
    """(name, dtype, shape) of the TensorSpec entries in the INPUTS / OUTPUTS list of a generated file."""
    head = {"kotlin": rf"val {block.upper()}: List<TensorSpec> = listOf\((.*?)\n        \)",
            "swift": rf"static let {block}: \[TensorSpec\] = \[(.*?)\n    \]"}[lang]
    body = re.search(head, text, re.S).group(1)
    pat = (r'TensorSpec\("(\w+)", "(\w+)", intArrayOf\(([-\d, ]*)\)\)' if lang == "kotlin"
           else r'TensorSpec\(name: "(\w+)", dtype: "(\w+)", shape: \[([-\d, ]*)\]\)')
    return [(n, d, [int(x) for x in s.split(",") if x.strip()]) for n, d, s in re.findall(pat, body)]


def _sane(text: str) -> None:
    assert "@@" not in text and "TODO" not in text
    code = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)                  # strings out
    code = re.sub(r"//[^\n]*|/\*.*?\*/", "", code, flags=re.S)       # comments out
    stack, pairs = [], {")": "(", "]": "[", "}": "{"}
    for ch in code:
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            assert stack and stack.pop() == pairs[ch], text
    assert not stack


def test_each_platform_gets_only_its_files(bundle, packaged, tmp_path):
    b = ecr.read_bundle(bundle)
    android, ios = packaged / "android", packaged / "ios"
    files = {d: {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()} for d in (android, ios)}
    assert not [f for f in files[android] if f.endswith(".swift") or f.startswith("swift/")]
    assert not [f for f in files[ios] if f.endswith(".kt") or f.startswith("kotlin/")]
    assert {"kotlin/DLRMLiteRT.kt", "kotlin/DLRMExecuTorch.kt", "kotlin/EdgecompressSupport.kt"} <= files[android]
    assert {"swift/DLRMLiteRT.swift", "swift/DLRMExecuTorch.swift", "swift/EdgecompressSupport.swift"} <= files[ios]
    for d in (android, ios):                                        # default: what the bundle carries, verbatim
        assert (d / "model.tflite").read_bytes() == b.members["artifacts/model.tflite"]
        assert (d / "model.pte").read_bytes() == b.members["artifacts/model.pte"]
    # --formats per platform: Android LiteRT only, iOS ExecuTorch only
    a2, i2 = tmp_path / "a", tmp_path / "i"
    assert main(["package", str(bundle), "--android", str(a2), "--ios", str(i2),
                 "--formats", "android:litert,ios:executorch"]) == 0
    got = {d: sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()) for d in (a2, i2)}
    assert "model.tflite" in got[a2] and "model.pte" not in got[a2] and "kotlin/DLRMExecuTorch.kt" not in got[a2]
    assert "model.pte" in got[i2] and "model.tflite" not in got[i2] and "swift/DLRMLiteRT.swift" not in got[i2]
    assert list(json.loads((a2 / "input_spec.json").read_text())["artifacts"]) == ["litert"]
    assert list(json.loads((i2 / "input_spec.json").read_text())["artifacts"]) == ["executorch"]
    a3 = tmp_path / "a3"
    assert main(["package", str(bundle), "--android", str(a3), "--formats", "executorch"]) == 0
    assert not (a3 / "model.tflite").exists() and (a3 / "model.pte").exists()
    assert main(["package", str(bundle), "--android", str(tmp_path / "x"), "--formats", "coreml"]) == 2


def test_generated_code_names_the_real_signature(bundle, packaged):
    b = ecr.read_bundle(bundle)
    sigs = _litert_signature(b.members["artifacts/model.tflite"])
    et = _executorch_meta(b.members["artifacts/model.pte"])
    assert set(sigs) == {"b1", "b64"}
    for lang, d, ext in (("kotlin", packaged / "android" / "kotlin", "kt"), ("swift", packaged / "ios" / "swift", "swift")):
        lite = (d / f"DLRMLiteRT.{ext}").read_text()
        exe = (d / f"DLRMExecuTorch.{ext}").read_text()
        for text in (lite, exe, (d / f"EdgecompressSupport.{ext}").read_text()):
            _sane(text)
        for key, sig in sigs.items():           # every signature: same names, dtypes, per-row shapes, batch
            batch = sig["inputs"][0][2][0]
            # LiteRT feeds by name: the generated lists follow the model's input order
            assert sorted(_specs(lite, lang, "inputs")) == sorted((n, t, [-1, *s[1:]]) for n, t, s in sig["inputs"])
            assert _specs(lite, lang, "outputs") == [(n, t, [-1, *s[1:]]) for n, t, s in sig["outputs"]]
            assert (f'"{key}" to {batch}' if lang == "kotlin" else f'"{key}": {batch}') in lite
        names = [i["name"] for i in b.manifest["inputs"]]                # the model's order
        assert sorted(names) == sorted(n for n, _, _ in sigs["b1"]["inputs"])
        dtype = {n: t for n, t, _ in sigs["b1"]["inputs"]}
        out_name = sigs["b1"]["outputs"][0][0]
        if lang == "kotlin":
            feeds = re.findall(r'^\s+"(\w+)" to ByteBuffer', lite, re.M)
            params = re.search(r"fun run\(batch: Int, (.*?)\)", lite).group(1)
            assert f'mapOf<String, Any>("{out_name}" to out)' in lite
            want = ", ".join(f"{n}: {KOTLIN_ARRAYS[dtype[n]]}" for n in names)
        else:
            feeds = re.findall(r'^\s+"(\w+)": \w+\.withUnsafeBufferPointer', lite, re.M)
            params = re.search(r"func run\(batch: Int, (.*?)\)", lite).group(1)
            assert f'runner.output(named: "{out_name}")' in lite
            want = ", ".join(f"{n}: [{SWIFT_SCALARS[dtype[n]]}]" for n in names)
        assert feeds == names and params == want
        # ExecuTorch: dtypes and shapes from the method metadata, names (positional) from the manifest
        assert [(t, s[1:]) for _, t, s in _specs(exe, lang, "inputs")] == [(t, s[1:]) for t, s in et["inputs"]]
        assert [(t, s[1:]) for _, t, s in _specs(exe, lang, "outputs")] == [(t, s[1:]) for t, s in et["outputs"]]
        assert [n for n, _, _ in _specs(exe, lang, "inputs")] == names
        max_batch = et["inputs"][0][1][0]
        assert (f"MAX_BATCH = {max_batch}" if lang == "kotlin" else f"maxBatch = {max_batch}") in exe
        for n, (t, s) in zip(names, et["inputs"]):
            dims = ", ".join(["batch.toLong()", *[f"{x}L" for x in s[1:]]]) if lang == "kotlin" else \
                ", ".join(["batch", *map(str, s[1:])])
            line = (f"Tensor.fromBlob({n}, longArrayOf({dims}))" if lang == "kotlin"
                    else f"Tensor<{SWIFT_SCALARS[t]}>({n}, shape: [{dims}])")
            assert line in exe
    assert "package com.example.recsys" in (packaged / "android" / "kotlin" / "DLRMLiteRT.kt").read_text()
    # the helpers read the keys the packaged JSON files really have
    ids = json.loads((packaged / "android" / "id_maps.json").read_text())["user"]
    stats = json.loads((packaged / "android" / "dense_stats.json").read_text())
    rule = stats["inputs"]["dense"]["raw_transform"]
    assert {"raw_to_row", "oov_row", "rows"} <= set(ids) and {"mean", "std", "fill"} <= set(rule)
    for support in (packaged / "android" / "kotlin" / "EdgecompressSupport.kt",
                    packaged / "ios" / "swift" / "EdgecompressSupport.swift"):
        text = support.read_text()
        for key in ("inputs", "raw_to_row", "oov_row", "rows", "raw_transform", "mean", "std", "fill"):
            assert f'"{key}"' in text, (support.name, key)


def test_input_spec_types_every_tensor(bundle, packaged):
    b = ecr.read_bundle(bundle)
    sigs = _litert_signature(b.members["artifacts/model.tflite"])
    for platform in ("android", "ios"):
        spec = json.loads((packaged / platform / "input_spec.json").read_text())
        by = {i["name"]: i for i in spec["inputs"]}
        assert by["dense"]["dtype"] == "float32" and by["dense"]["shape"] == ["B", 5] and by["dense"]["batch_dim"] == 0
        assert by["sparse"]["dtype"] == "int64" and by["sparse"]["shape"] == ["B", 7]
        assert by["sparse"]["artifact_dtypes"] == {"litert": "int32", "executorch": "int64"}
        assert by["sparse"]["oov_row"] == [0] * 7 and by["sparse"]["fields"][:2] == ["user", "item"]
        assert spec["outputs"] == [{"name": "output", "form": "logit", "dtype": "float32", "shape": ["B"],
                                    "columns": [0, 1], "meaning": "a logit: apply a sigmoid for a probability"}]
        lit = spec["artifacts"]["litert"]
        assert sorted((i["name"], i["dtype"], i["shape"]) for i in lit["inputs"]) == \
            sorted((n, t, ["B", *s[1:]]) for n, t, s in sigs["b64"]["inputs"])
        assert lit["outputs"][0]["name"] == sigs["b64"]["outputs"][0][0] and lit["outputs"][0]["shape"] == ["B"]
        assert lit["outputs"][0]["heads"][0]["form"] == "logit"
        assert lit["signatures"] == {"b1": 1, "b64": 64} and "Interpreter" in lit["signature_source"]
        assert spec["artifacts"]["executorch"]["batch"]["max"] >= 64


def _row(entry: dict, raw) -> int:
    """What the generated IdMaps.row does, following id_maps.json's rule."""
    table = entry["raw_to_row"]
    if table == "identity":
        r = int(raw)
        if 0 <= r < entry["rows"]:
            return r
    elif str(raw) in table:
        return table[str(raw)]
    if entry["oov_row"] is None:
        raise KeyError(raw)
    return entry["oov_row"]


def test_id_maps_round_trip_through_the_runtime(bundle, packaged, movielens):
    ds, _, test_ds = movielens
    assert "app/id_maps.json" in ecr.read_bundle(bundle).members       # stored by compile, beside the artifacts
    ids = json.loads((packaged / "android" / "id_maps.json").read_text())
    assert ids == json.loads((packaged / "ios" / "id_maps.json").read_text())
    users, items = ds.meta["user_ids"], ds.meta["item_ids"]
    assert ids["user"]["raw_type"] == "int" and len(ids["user"]["raw_to_row"]) == len(users) == 943
    assert ids["gender"]["raw_type"] == "string" and ids["age_bucket"]["raw_to_row"] == "identity"
    cats = ds.meta["categories"]
    # raw ids of some test rows, as the training data names them, mapped back with id_maps.json
    rows = {"dense": test_ds.inputs["dense"][:64], "sparse": test_ds.inputs["sparse"][:64]}
    names = ds.meta["field_names"]
    raw = {"user": users[rows["sparse"][:, 0]], "item": items[rows["sparse"][:, 1]]}
    for j, f in enumerate(names):
        if f in cats:
            raw[f] = [cats[f][k] for k in rows["sparse"][:, j]]
    mapped = rows["sparse"].copy()
    for j, f in enumerate(names):
        if f in raw:
            mapped[:, j] = [_row(ids[f], r) for r in raw[f]]
    assert np.array_equal(mapped, rows["sparse"])
    assert _row(ids["gender"], "M") == cats["gender"].index("M")
    # OOV: an unseen raw user maps to the OOV row; the runtime maps an out-of-range id to the same row
    unseen = max(int(u) for u in users) + 1000
    assert _row(ids["user"], unseen) == ids["user"]["oov_row"] == 0
    for backend in ("litert", "executorch", "numpy"):
        m = ecr.load(bundle, backend=backend)
        via_map = rows["sparse"].copy()
        via_map[:, 0] = _row(ids["user"], unseen)
        via_runtime = rows["sparse"].copy()
        via_runtime[:, 0] = 943 + 57                                     # outside the table: runtime's OOV rule
        a = m.predict({"dense": rows["dense"], "sparse": via_map})
        bb = m.predict({"dense": rows["dense"], "sparse": via_runtime})
        assert np.array_equal(a, bb), backend
        assert not np.allclose(a, m.predict(rows))                      # the OOV row is a real change


def test_dense_stats_are_the_training_rows(packaged, movielens):
    ds, train_ds, _ = movielens
    stats = json.loads((packaged / "android" / "dense_stats.json").read_text())
    d = stats["inputs"]["dense"]
    x = train_ds.inputs["dense"].astype(np.float64)
    assert stats["rows_from"] == "training rows" and d["rows"] == len(x) == 20_000
    assert d["columns"] == ds.meta["dense_names"]
    np.testing.assert_allclose(d["mean"], x.mean(0), atol=1e-6)
    np.testing.assert_allclose(d["std"], x.std(0), atol=1e-6)
    # the loader's raw -> model rule reproduces the model's input from a raw timestamp
    rule = d["raw_transform"]
    r = load_movielens()
    k = rule["columns"].index("timestamp")
    want = (r.timestamp[:5].astype(np.float64) - rule["mean"][k]) / rule["std"][k]
    np.testing.assert_allclose(ds.inputs["dense"][:5, k], want, rtol=1e-5, atol=1e-5)
