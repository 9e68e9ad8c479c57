"""``edgecompress package``: what an Android or iOS app team needs from a bundle.

    package("model.ecb", android="app/src/main/assets/recsys", ios="ios/Resources/recsys",
            formats=None)                  # None: every app artifact the bundle carries

writes, per platform directory, only what that platform uses:
- the app artifacts asked for (``model.tflite`` for LiteRT, ``model.pte`` for ExecuTorch; both
  runtimes exist on Android and iOS), byte-identical to the verified bundle members;
  ``formats`` picks them: "litert", "litert,executorch", or per platform
  "android:litert,ios:executorch";
- ``input_spec.json``: every input typed (bundle dtype, per-artifact dtype, shape, batch
  dimension, vocabularies, padding / OOV rules) and every output (tensor, dtype, shape, which
  columns are which head, logit or probability), per artifact the signature read from the
  artifact itself (export/app_signature.py) and cross-checked with the manifest;
- ``id_maps.json``: {field: entry}; per id field the valid rows, the unknown-id rule (OOV row or "reject") and
  the raw id -> row table when the compile data had raw ids (bundle member ``app/id_maps.json``,
  written by compile, export/app_data.py; else ``identity``: the raw ids are the rows). The rule:
  row = raw_to_row[str(raw id)] (identity: the id itself when 0 <= id < rows); an unknown raw
  id maps to ``oov_row``, or is refused when it is null;
- ``dense_stats.json``: per dense input column mean / std / min / max of the training rows and
  the loader's raw -> model transform (member ``app/dense_stats.json``; older bundles: their
  reference rows, said in ``rows_from``);
- generated sources (export/app_code.py): Android ``kotlin/*.kt``, iOS ``swift/*.swift``;
- ``reference_inputs.json`` (rows and expected outputs: an integration test) and ``INTEGRATION.md``.

Row remapping (pruned tables) and projections are inside the artifacts, so the app feeds the
same rows as the training data.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from edgecompress_runtime.bundle import read_bundle

from ..errors import EdgecompressError
from .app_code import app_sources
from .app_data import DENSE_STATS, ID_MAPS, dense_stats
from .app_note import note
from .app_signature import FORM_MEANING, artifact_signature, output_form

FILES = {"litert": "model.tflite", "executorch": "model.pte"}
PREFERENCE = {"android": ("litert", "executorch"), "ios": ("executorch", "litert")}
PLATFORMS = ("android", "ios")


def _b(shape) -> list:
    return ["B" if d is None or d == -1 else int(d) for d in shape]


def _outputs(man: dict, sig: dict | None) -> list[dict]:
    heads = man.get("model", {}).get("outputs") or [{"name": "output", "form": man.get("model", {}).get("output"),
                                                    "width": 1}]
    out, col = [], 0
    for h in heads:
        w = int(h.get("width", 1))
        form = output_form(man, h)
        out.append({"name": h.get("name"), "form": form, "dtype": "float32",
                    "shape": ["B"] if w == 1 else ["B", w], "columns": [col, col + w],
                    "meaning": FORM_MEANING[form]})
        col += w
    if sig is not None:
        for o in out:
            o["tensor"] = sig["outputs"][0]["name"]
    return out


def _input_spec(man: dict, carried: list[str], sigs: dict) -> dict:
    model = man.get("model", {})
    out = {"schema": "edgecompress.app-input-spec/2",
           "model": {"class": model.get("class"), "task": model.get("task"), "output": model.get("output"),
                     "plan": [p.get("pass") for p in man.get("plan", [])]},
           "batch_dim": 0, "inputs": [], "outputs": _outputs(man, None), "artifacts": {}}
    for s in man["inputs"]:
        entry = {"name": s["name"], "kind": s.get("kind"), "dtype": s["dtype"], "shape": _b(s["shape"]),
                 "batch_dim": 0,
                 "artifact_dtypes": {f: next(t["dtype"] for t in sigs[f]["inputs"] if t["name"] == s["name"])
                                     for f in carried}}
        if s.get("kind") == "ids":
            entry.update(fields=s.get("fields"), vocab=s.get("vocab"), oov_row=s.get("oov_row"),
                         id_maps="id_maps.json")
            if s.get("padding_id") is not None:
                entry["padding_id"] = s["padding_id"]
        else:
            entry["normalisation"] = "dense_stats.json"
            if s.get("id_columns"):
                entry["id_columns"] = s["id_columns"]
        out["inputs"].append(entry)
    for fmt in carried:
        a, sig = man["artifacts"][fmt], sigs[fmt]
        info = {"file": FILES[fmt], "size_bytes": a.get("size_bytes"), "sha256": None,
                "precision": a.get("precision"), "approximations": a.get("approximations", []),
                "parity": a.get("parity"), "metrics": a.get("metrics"), "toolchain": a.get("toolchain"),
                "signature_source": sig["source"], "batch_dim": 0,
                "inputs": [{**t, "shape": _b(t["shape"])} for t in sig["inputs"]],
                "outputs": [{**t, "shape": _b(t["shape"]), "heads": _outputs(man, sig)} for t in sig["outputs"]]}
        if fmt == "litert":
            info.update(signatures=sig["signatures"], output=sig["outputs"][0]["name"])
        else:
            info.update(method=sig["method"], batch=sig["batch"])
        out["artifacts"][fmt] = info
    return out


def _id_maps(man: dict, stored: dict | None) -> dict:
    maps = {}
    raw_legacy = man.get("id_maps") or {}
    fields_stored = (stored or {}).get("fields") or {}
    for s in man["inputs"]:
        if s.get("kind") != "ids":
            continue
        fields = s.get("fields") or [s["name"]]
        oov = s.get("oov_row") or [None] * len(fields)
        for j, name in enumerate(fields):
            rows = (s.get("vocab") or [None] * len(fields))[j]
            entry = {"input": s["name"], "field": j, "rows": rows,
                     "valid_ids": None if rows is None else [0, rows - 1], "oov_row": oov[j],
                     "unknown_ids": "reject" if oov[j] is None else f"map to row {oov[j]}"}
            if s.get("padding_id") is not None:
                entry["padding_id"] = s["padding_id"]
            st = fields_stored.get(name) or {}
            if st.get("raw") is not None:
                entry["raw_type"] = st["raw_type"]
                entry["raw_to_row"] = {str(r): i for i, r in enumerate(st["raw"])}
            elif name in raw_legacy:
                entry["raw_type"], entry["raw_to_row"] = "string", raw_legacy[name]
            else:
                entry["raw_type"], entry["raw_to_row"] = "int", "identity"
            maps[name] = entry
    return maps


def _dense_stats(bundle, man: dict) -> dict | None:
    if not any(s.get("kind") == "dense" for s in man["inputs"]):
        return None
    if DENSE_STATS in bundle.members:
        return json.loads(bundle.members[DENSE_STATS])
    ref = {k: bundle.array(m) for k, m in man["reference"]["inputs"].items()}
    n = len(next(iter(ref.values()))) if ref else 0
    return dense_stats(man["inputs"], ref, {}, f"the bundle's {n} reference rows (compiled before app stats)")


def parse_formats(formats, carried: dict) -> dict:
    """{platform: [formats]} from None / "a,b" / "android:a,ios:b" / a list of those / a dict.
    A platform no entry names gets every app artifact the bundle carries."""
    have = [f for f in FILES if f in carried]
    if isinstance(formats, dict):
        common, scoped = [], {p: list(formats.get(p) or []) for p in PLATFORMS}
    else:
        items = [x.strip() for x in ((formats or "").split(",") if isinstance(formats, str) or formats is None
                                     else formats) if x.strip()]
        common, scoped = [x for x in items if ":" not in x], {p: [] for p in PLATFORMS}
        for x in items:
            if ":" in x:
                p, f = (y.strip() for y in x.split(":", 1))
                if p not in PLATFORMS:
                    raise EdgecompressError(f"--formats {x!r}: the platform must be android or ios")
                scoped[p].append(f)
    want = {}
    for p in PLATFORMS:
        fs = common + scoped[p] or have
        for f in fs:
            if f not in FILES:
                raise EdgecompressError(f"--formats: {f!r} is not an app format (litert, executorch)")
            if f not in have:
                raise EdgecompressError(f"--formats asks for {f} for {p}, but the bundle carries only {have}")
        want[p] = [f for f in PREFERENCE[p] if f in fs]
    return want


def _write(out: Path, name: str, data) -> Path:
    p = out / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        p.write_bytes(data)
    else:
        p.write_text(data if isinstance(data, str) else json.dumps(data, indent=1) + "\n")
    return p


def package(bundle_path, android=None, ios=None, *, reference: bool = True, formats=None,
            kotlin_package: str = "edgecompress.generated") -> dict:
    """Write the app package(s); returns {platform: [written paths]}.
    ``reference``: also write the bundle's reference rows and outputs as JSON
    (a ready-made integration test for the app)."""
    if android is None and ios is None:
        raise EdgecompressError("package needs --android DIR and/or --ios DIR")
    bundle = read_bundle(bundle_path)
    man = bundle.manifest
    arts = {f: a for f, a in (man.get("artifacts") or {}).items() if isinstance(a, dict) and f in FILES}
    if not arts:
        raise EdgecompressError(f"{bundle_path} carries no app artifact (only the numpy form); recompile with "
                                "`edgecompress compile ... --formats numpy,litert,executorch` "
                                "(needs pip install 'edgecompress[export]')")
    chosen = parse_formats(formats, arts)
    needed = sorted({f for p, d in (("android", android), ("ios", ios)) if d is not None for f in chosen[p]})
    data = {f: bundle.members[arts[f]["member"]] for f in needed}
    shas = {f: hashlib.sha256(b).hexdigest() for f, b in data.items()}
    sigs = {f: artifact_signature(f, data[f], man) for f in needed}
    stored = json.loads(bundle.members[ID_MAPS]) if ID_MAPS in bundle.members else None
    ids, stats = _id_maps(man, stored), _dense_stats(bundle, man)
    written = {}
    for platform, target_dir in (("android", android), ("ios", ios)):
        if target_dir is None:
            continue
        carried = chosen[platform]
        if not carried:
            raise EdgecompressError(f"--formats leaves nothing for {platform}")
        out = Path(target_dir)
        out.mkdir(parents=True, exist_ok=True)
        spec = _input_spec(man, carried, sigs)
        paths = []
        for fmt in carried:
            spec["artifacts"][fmt]["sha256"] = shas[fmt]
            paths.append(_write(out, FILES[fmt], data[fmt]))
        paths += [_write(out, "input_spec.json", spec), _write(out, "id_maps.json", ids)]
        if stats is not None:
            paths.append(_write(out, "dense_stats.json", stats))
        code = app_sources(platform, {f: sigs[f] for f in carried}, man, shas, package=kotlin_package)
        paths += [_write(out, rel, text) for rel, text in code.items()]
        if reference:
            ref = man["reference"]
            rows = {"inputs": {k: bundle.array(m).tolist() for k, m in ref["inputs"].items()},
                    "outputs": np.asarray(bundle.array(ref["outputs"])).tolist(),
                    "tolerance": {f: (arts[f].get("parity") or {}).get("tolerance") for f in carried}}
            paths.append(_write(out, "reference_inputs.json", json.dumps(rows) + "\n"))
        paths.append(_write(out, "INTEGRATION.md", note(platform, man, spec, carried, sorted(code))))
        written[platform] = [str(x) for x in paths]
    return written
