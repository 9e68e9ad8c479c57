"""Kotlin and Swift sources for an app package, rendered from the artifact's real signature.

    files = app_sources("android", sigs, man, package="com.example.recsys")   # {relative path: text}

``sigs`` are export/app_signature.py's checked signatures: every tensor name, dtype and
shape in the generated code comes from them (LiteRT: the signature runners; ExecuTorch:
the method metadata), never from a guess. Templates live in ``app_templates/*.tmpl``
(package data); ``@@NAME@@`` placeholders, and rendering fails if one is left.

Android: ``<Model>LiteRT.kt`` (``org.tensorflow.lite.Interpreter.runSignature`` with the
signature's keys and tensor names), ``<Model>ExecuTorch.kt`` (``org.pytorch.executorch.Module``),
``EdgecompressSupport.kt`` (``TensorSpec``, ``IdMaps`` raw id -> row with the OOV rule,
``DenseStats``). iOS: the same three in Swift (TensorFlowLiteSwift ``SignatureRunner``,
ExecuTorch ``Module``).
"""
from __future__ import annotations

import re
from importlib import resources

import numpy as np

from ..errors import EdgecompressError
from .app_signature import FORM_MEANING, output_form

# dtype -> (Kotlin array, ByteBuffer view, bytes, ExecuTorch getter, Swift scalar)
_TYPES = {"float32": ("FloatArray", "asFloatBuffer()", 4, "dataAsFloatArray", "Float"),
          "int32": ("IntArray", "asIntBuffer()", 4, "dataAsIntArray", "Int32"),
          "int64": ("LongArray", "asLongBuffer()", 8, "dataAsLongArray", "Int64")}
_KEYWORDS = {"as", "break", "class", "continue", "do", "else", "false", "for", "fun", "if", "in", "interface",
             "is", "null", "object", "package", "return", "super", "this", "throw", "true", "try", "typealias",
             "val", "var", "when", "while", "let", "func", "import", "init", "internal", "private", "public",
             "static", "struct", "switch", "case", "default", "enum", "extension", "protocol", "self", "Self",
             "batch", "where", "repeat", "guard", "throws", "rethrows", "inout", "operator", "subscript"}
PLACEHOLDER = re.compile(r"@@[A-Z_]+@@")
NAMES = {"litert": "LiteRT", "executorch": "ExecuTorch"}


def _types(dtype: str):
    if dtype not in _TYPES:
        raise EdgecompressError(f"app code cannot feed a {dtype} tensor (supported: {sorted(_TYPES)})")
    return _TYPES[dtype]


def ident(name: str) -> str:
    """A Kotlin / Swift identifier for a tensor name."""
    s = re.sub(r"\W", "_", name)
    s = "_" + s if not s or s[0].isdigit() else s
    return s + "_" if s in _KEYWORDS else s


def class_name(model_class: str | None) -> str:
    s = re.sub(r"\W", "", model_class or "") or "Model"
    return s[0].upper() + s[1:] if not s[0].isdigit() else "M" + s


def _per_row(t: dict) -> int:
    return int(np.prod(t["shape"][1:])) if len(t["shape"]) > 1 else 1


def _shape_tail(t: dict) -> list[int]:
    return [int(d) for d in t["shape"][1:]]


def _template(name: str) -> str:
    return resources.files("edgecompress.export").joinpath("app_templates", name).read_text()


def render(name: str, values: dict) -> str:
    text = _template(name)
    for k, v in values.items():
        text = text.replace(f"@@{k}@@", str(v))
    left = sorted(set(PLACEHOLDER.findall(text)))
    if left:
        raise EdgecompressError(f"template {name} left placeholders {left} unfilled (a bug)")
    return text


def _spec_lines(tensors: list[dict], lang: str) -> str:
    if lang == "kotlin":
        rows = [f'            TensorSpec("{t["name"]}", "{t["dtype"]}", intArrayOf({", ".join(map(str, t["shape"]))})),'
                for t in tensors]
    else:
        rows = [f'        TensorSpec(name: "{t["name"]}", dtype: "{t["dtype"]}", shape: [{", ".join(map(str, t["shape"]))}]),'
                for t in tensors]
    return "\n".join(rows)


def _meaning(sig: dict, man: dict) -> tuple[str, str]:
    """(meaning of the output for the doc comment, short description)."""
    out = sig["outputs"][0]
    heads = man.get("model", {}).get("outputs") or [{"name": "output", "form": man.get("model", {}).get("output"),
                                                    "width": 1}]
    parts, col = [], 0
    for h in heads:
        w = int(h.get("width", 1))
        cols = f"column {col}" if w == 1 else f"columns {col}..{col + w - 1}"
        form = output_form(man, h)
        parts.append(f"{cols}: head '{h.get('name')}', " + FORM_MEANING[form])
        col += w
    per = _per_row(out)
    desc = f"{out['dtype']} [batch{'' if per == 1 else f' x {per}'}]"
    return f"{out['name']} {desc}; " + "; ".join(parts), desc


def _common(fmt: str, sig: dict, man: dict, meta: dict, package: str, sha: str, lang: str) -> dict:
    out = sig["outputs"][0]
    meaning, desc = _meaning(sig, man)
    kt, view, nbytes, getter, swift = _types(out["dtype"])
    return {"ARTIFACT": {"litert": "model.tflite", "executorch": "model.pte"}[fmt], "SHA": sha,
            "PACKAGE": package, "MODEL": man.get("model", {}).get("class") or "model",
            "PRECISION": meta.get("precision") or "fp32",
            "CLASS": class_name(man.get("model", {}).get("class")) + NAMES[fmt],
            "INPUT_SPECS": _spec_lines(sig["inputs"], lang), "OUTPUT_SPECS": _spec_lines(sig["outputs"], lang),
            "OUTPUT_MEANING": meaning, "OUTPUT_DESC": desc, "OUTPUT_NAME": out["name"],
            "OUTPUT_PER_ROW": _per_row(out), "OUTPUT_BYTES": nbytes, "OUTPUT_ARRAY": kt, "OUTPUT_VIEW": view,
            "OUTPUT_GETTER": getter, "OUTPUT_SCALAR": swift}


def kotlin(fmt: str, sig: dict, man: dict, meta: dict, package: str, sha: str) -> str:
    v = _common(fmt, sig, man, meta, package, sha, "kotlin")
    params, checks, feeds = [], [], []
    for t in sig["inputs"]:
        arr, view, nbytes, _, _ = _types(t["dtype"])
        p, per = ident(t["name"]), _per_row(t)
        params.append(f"{p}: {arr}")
        checks.append(f'        require({p}.size == batch * {per}) {{ "{t["name"]}: ${{{p}.size}} values, '
                      f'want $batch x {per}" }}')
        if fmt == "litert":
            feeds.append(f'            "{t["name"]}" to ByteBuffer.allocateDirect({p}.size * {nbytes})'
                         f".order(ByteOrder.nativeOrder()).apply {{ {view}.put({p}) }},")
        else:
            dims = ", ".join(["batch.toLong()", *[f"{d}L" for d in _shape_tail(t)]])
            feeds.append(f"            EValue.from(Tensor.fromBlob({p}, longArrayOf({dims}))),")
    v.update(RUN_PARAMS=", ".join(params), RUN_CHECKS="\n".join(checks), RUN_FEEDS="\n".join(feeds))
    if fmt == "litert":
        v["SIGNATURES"] = ", ".join(f'"{k}" to {b}' for k, b in sig["signatures"].items())
        return render("LiteRTModel.kt.tmpl", v)
    v.update(METHOD=sig["method"], BATCH_MIN=sig["batch"]["min"], BATCH_MAX=sig["batch"]["max"])
    return render("ExecuTorchModel.kt.tmpl", v)


def swift(fmt: str, sig: dict, man: dict, meta: dict, sha: str) -> str:
    v = _common(fmt, sig, man, meta, "", sha, "swift")
    params, checks, feeds = [], [], []
    for t in sig["inputs"]:
        scalar = _types(t["dtype"])[4]
        p, per = ident(t["name"]), _per_row(t)
        params.append(f"{p}: [{scalar}]")
        checks.append(f'        guard {p}.count == batch * {per} else {{ throw ModelInputError.wrongLength('
                      f'"{t["name"]}", {p}.count, batch * {per}) }}')
        if fmt == "litert":
            feeds.append(f'            "{t["name"]}": {p}.withUnsafeBufferPointer {{ Data(buffer: $0) }},')
        else:
            dims = ", ".join(["batch", *map(str, _shape_tail(t))])
            feeds.append(f"            Tensor<{scalar}>({p}, shape: [{dims}]),")
    v.update(RUN_PARAMS=", ".join(params), RUN_CHECKS="\n".join(checks), RUN_FEEDS="\n".join(feeds))
    if fmt == "litert":
        v["SIGNATURES"] = ", ".join(f'"{k}": {b}' for k, b in sig["signatures"].items())
        return render("LiteRTModel.swift.tmpl", v)
    v.update(METHOD=sig["method"], BATCH_MIN=sig["batch"]["min"], BATCH_MAX=sig["batch"]["max"])
    return render("ExecuTorchModel.swift.tmpl", v)


def app_sources(platform: str, sigs: dict, man: dict, shas: dict, package: str = "edgecompress.generated") -> dict:
    """{relative path: source text} for ``platform`` ("android" | "ios") and the artifacts in ``sigs``."""
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", package):
        raise EdgecompressError(f"--kotlin-package {package!r} is not a Kotlin package name (like com.example.recsys)")
    base = class_name(man.get("model", {}).get("class"))
    files = {}
    for fmt, sig in sigs.items():
        meta = man["artifacts"][fmt]
        if platform == "android":
            files[f"kotlin/{base}{NAMES[fmt]}.kt"] = kotlin(fmt, sig, man, meta, package, shas[fmt])
        else:
            files[f"swift/{base}{NAMES[fmt]}.swift"] = swift(fmt, sig, man, meta, shas[fmt])
    if platform == "android":
        files["kotlin/EdgecompressSupport.kt"] = render("Support.kt.tmpl", {"PACKAGE": package})
    else:
        files["swift/EdgecompressSupport.swift"] = render("Support.swift.tmpl", {})
    return files
