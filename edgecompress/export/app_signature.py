"""The real tensor signature of an app artifact, read through its own runtime and checked
against the bundle's manifest.

    sig = artifact_signature("litert", tflite_bytes, manifest)

LiteRT: ``ai_edge_litert.interpreter.Interpreter(...).get_signature_list()`` and each
``get_signature_runner(key)``'s input / output details (names, dtypes, static shapes per
batch signature). ExecuTorch: ``executorch.runtime`` program ``metadata(method)`` (dtypes and
the upper-bound shapes of the dynamic batch; positional inputs, named from the manifest).
When a runtime is not installed here, the manifest's record is used and ``source`` says so.

Returned form (every tensor: ``name``, ``dtype``, ``shape`` with -1 for the batch dimension)::

    {"format", "source", "inputs": [...], "outputs": [...], "batch_dim": 0,
     "signatures": {key: batch} (LiteRT) | "method", "batch": {"min", "max"} (ExecuTorch)}

A disagreement between artifact and manifest (names, order, dtypes, per-row shapes) is a
``EdgecompressError``: the generated code would not run the artifact.
"""
from __future__ import annotations

import importlib.util

import numpy as np

from ..errors import EdgecompressError

# executorch ScalarType codes (c10 numbering)
_ET_DTYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32",
              7: "float64", 11: "bool"}


def _tensor(name: str, dtype, shape) -> dict:
    shape = [int(d) for d in shape]
    return {"name": name, "dtype": np.dtype(dtype).name if not isinstance(dtype, str) else dtype,
            "shape": [-1, *shape[1:]] if shape else []}


def _litert(data: bytes) -> dict:
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=data)
    sigs, per = it.get_signature_list(), {}
    for key in sigs:
        runner = it.get_signature_runner(key)
        ins, outs = runner.get_input_details(), runner.get_output_details()
        batch = {int(d["shape"][0]) for d in ins.values() if len(d["shape"])}
        if len(batch) != 1:
            raise EdgecompressError(f".tflite signature {key!r}: inputs disagree on the batch size {sorted(batch)}")
        per[key] = {"batch": batch.pop(),
                    "inputs": [_tensor(n, ins[n]["dtype"], ins[n]["shape"]) for n in sigs[key]["inputs"]],
                    "outputs": [_tensor(n, outs[n]["dtype"], outs[n]["shape"]) for n in sigs[key]["outputs"]]}
    if not per:
        raise EdgecompressError("the .tflite has no signatures")
    first = next(iter(per.values()))
    for key, s in per.items():
        if (s["inputs"], s["outputs"]) != (first["inputs"], first["outputs"]):
            raise EdgecompressError(f".tflite signature {key!r} has other tensors than the first one: "
                                    f"{s['inputs']} / {s['outputs']}")
    return {"format": "litert", "source": "ai_edge_litert.interpreter.Interpreter signature runners",
            "inputs": first["inputs"], "outputs": first["outputs"], "batch_dim": 0,
            "signatures": {k: v["batch"] for k, v in sorted(per.items(), key=lambda kv: kv[1]["batch"])}}


def _executorch(data: bytes, meta: dict) -> dict:
    from executorch.runtime import Runtime
    importlib.import_module("executorch.kernels.quantized")    # registers the quantized ops a program names
    method = meta.get("method", "forward")
    mm = Runtime.get().load_program(data).metadata(method)
    names = [i["name"] for i in meta.get("inputs") or []]
    if len(names) != mm.num_inputs():
        raise EdgecompressError(f".pte method {method!r} takes {mm.num_inputs()} inputs, the manifest names "
                                f"{len(names)}: {names}")
    ins = [mm.input_tensor_meta(i) for i in range(mm.num_inputs())]
    outs = [mm.output_tensor_meta(i) for i in range(mm.num_outputs())]
    max_b = {int(t.sizes()[0]) for t in ins if len(t.sizes())}
    return {"format": "executorch", "source": "executorch.runtime program metadata",
            "inputs": [_tensor(n, _et_dtype(t.dtype()), t.sizes()) for n, t in zip(names, ins)],
            "outputs": [_tensor(f"output_{i}", _et_dtype(t.dtype()), t.sizes()) for i, t in enumerate(outs)],
            "batch_dim": 0, "method": method,
            "batch": {"min": int((meta.get("batch") or {}).get("min", 1)),
                      "max": max(max_b) if max_b else int((meta.get("batch") or {}).get("max", 1))}}


def _et_dtype(code) -> str:
    code = int(code)
    if code not in _ET_DTYPES:
        raise EdgecompressError(f".pte tensor has ExecuTorch dtype code {code}, which app code cannot feed")
    return _ET_DTYPES[code]


def _from_manifest(fmt: str, meta: dict, man: dict) -> dict:
    width = sum(int(h.get("width", 1)) for h in man.get("model", {}).get("outputs") or []) or 1
    ins = [{"name": i["name"], "dtype": i["dtype"], "shape": [-1, *i["shape"][1:]]} for i in meta.get("inputs") or []]
    out = {"name": meta.get("output", "output_0"), "dtype": "float32", "shape": [-1] if width == 1 else [-1, width]}
    base = {"format": fmt, "source": "the manifest (runtime not installed here)", "inputs": ins, "outputs": [out],
            "batch_dim": 0}
    if fmt == "litert":
        return {**base, "signatures": dict(sorted((meta.get("signatures") or {}).items(), key=lambda kv: kv[1]))}
    return {**base, "method": meta.get("method", "forward"), "batch": dict(meta.get("batch") or {"min": 1, "max": 1})}


def cross_check(sig: dict, meta: dict, man: dict) -> None:
    """The artifact's tensors against the manifest's record of them and the model's input spec."""
    fmt = sig["format"]
    want = [(i["name"], i["dtype"], [-1, *i["shape"][1:]]) for i in meta.get("inputs") or []]
    got = [(t["name"], t["dtype"], t["shape"]) for t in sig["inputs"]]
    if want != got:
        raise EdgecompressError(f"the {fmt} artifact's inputs {got} differ from the manifest's {want}")
    spec_names = [s["name"] for s in man["inputs"]]
    if [t["name"] for t in sig["inputs"]] != spec_names:
        raise EdgecompressError(f"the {fmt} artifact's inputs {[t['name'] for t in sig['inputs']]} are not the "
                                f"model's inputs {spec_names}")
    if fmt == "litert":
        if set(sig["signatures"]) != set(meta.get("signatures") or {}) or any(
                sig["signatures"][k] != int(v) for k, v in (meta.get("signatures") or {}).items()):
            raise EdgecompressError(f".tflite signatures {sig['signatures']} differ from the manifest's "
                                    f"{meta.get('signatures')}")
        if meta.get("output") and meta["output"] not in [o["name"] for o in sig["outputs"]]:
            raise EdgecompressError(f".tflite has no output {meta['output']!r}: {sig['outputs']}")
    width = sum(int(h.get("width", 1)) for h in man.get("model", {}).get("outputs") or []) or 1
    per_row = int(np.prod(sig["outputs"][0]["shape"][1:])) if sig["outputs"] else 0
    if per_row != width:
        raise EdgecompressError(f"the {fmt} artifact's output has {per_row} values a row, the model's heads {width}")


def artifact_signature(fmt: str, data: bytes, man: dict) -> dict:
    """The checked signature of the ``fmt`` artifact ``data`` of the bundle whose manifest is ``man``."""
    meta = man["artifacts"][fmt]
    module = {"litert": "ai_edge_litert", "executorch": "executorch"}[fmt]
    if importlib.util.find_spec(module) is None:
        sig = _from_manifest(fmt, meta, man)
    elif fmt == "litert":
        sig = _litert(data)
        # LiteRT feeds inputs by name (the signature lists them sorted): keep the model's order
        order = {s["name"]: i for i, s in enumerate(man["inputs"])}
        sig["inputs"].sort(key=lambda t: order.get(t["name"], len(order)))
    else:
        sig = _executorch(data, meta)
    cross_check(sig, meta, man)
    return sig


FORM_MEANING = {"logit": "a logit: apply a sigmoid for a probability", "probability": "a probability",
                "score": "a score per item (column j = item row j; id_maps.json maps raw item ids to rows): "
                         "rank by it, higher first"}


def output_form(man: dict, head: dict) -> str:
    """logit | probability | score (a retrieval bundle's every-item output)."""
    if man.get("retrieval"):
        return "score"
    return "probability" if (head.get("form") or "logit") != "logit" else "logit"
