"""How models built with two public recommendation libraries compile.

    .venv/bin/python benchmarks/compat.py [--quick] [--models DeepFM,DIN] [--library deepctr-torch]

Every model of tests/compat/models.py (deepctr-torch 0.3.0 and torch-rechub 0.9.0, the
``compat`` extra: built with the library's own API on seeded synthetic data, briefly trained)
is compiled with no wrapper, twice:

1. fp32 (``plan=[]``, target "local") with the numpy graph plus the ExecuTorch .pte and the
   LiteRT .tflite. Recorded: compiled or not (and the error's first line), the ops the bundle
   graph uses, and the parity = max |bundle - source model| on 1,024 held-out rows that compile
   never saw, through each backend (numpy, litert, executorch). Artifacts are requested the
   non-strict way (formats=None = every installed format; $EDGECOMPRESS_FORMATS is cleared):
   a format whose export or check fails is left out of the bundle with a warning instead of
   failing the compile; its parity is then null and the warning is recorded.
2. the searched default plan (``plan=None``, target "raspberry-pi-4" with its default memory
   and latency budgets, train rows as ``train_data``, numpy only). Recorded: size ratio
   (searched model bytes / fp32 model bytes, app artifacts excluded), AUC before / after on
   the compile data (what compile reports), and the honest figure: AUC of the source model
   and of the compressed bundle on the 1,024 parity rows (ΔAUC held-out = bundle - source),
   the plan, and the fraction of embedding bytes (fp32-equivalent) stored row-wise quantized.
   A search that raises (e.g. no plan fits) is recorded with its message.

Data split per model: held-out rows [0, 1024) = parity rows, the rest of the held-out rows =
compile ``data`` (labelled with the first task), training rows = ``train_data``. AUC is on the
first output column against the first task's label (YoutubeDNN: its positive's logit against
the click label, as compile measures it).

--quick: fp32 with all formats for deepctr DeepFM / xDeepFM and rechub DIN / MMOE, the
searched plan for deepctr DeepFM and rechub DIN only.
--models / --library filter the models (names as in tests/compat/models.py BUILDERS).

Writes benchmarks/results/compat.json (rewritten after every model, "complete": false until
the end) and prints a table: library, model, compiled, #ops, parity numpy / litert /
executorch, size ratio, ΔAUC held-out. Wall times per step are in the JSON. Builders train
on one torch thread (they set and restore it); compile uses torch's default."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))                      # tests.compat.models
os.environ.pop("EDGECOMPRESS_FORMATS", None)       # formats=None must mean every installed format
# torch.export's pytree emits one of these per export (noise, not a result)
warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import edgecompress as ec  # noqa: E402
import edgecompress_runtime as ecr  # noqa: E402
from edgecompress.data import Dataset  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "compat.json"
PARITY_ROWS = 1024
BACKENDS = ("numpy", "litert", "executorch")
APP_FORMATS = ("executorch", "litert")
QUICK_FP32 = [("deepctr-torch", "DeepFM"), ("deepctr-torch", "xDeepFM"), ("torch-rechub", "DIN"),
              ("torch-rechub", "MMOE")]
QUICK_SEARCH = [("deepctr-torch", "DeepFM"), ("torch-rechub", "DIN")]
LIBRARIES = ("deepctr-torch", "torch-rechub")


# ------------------------------------------------------------------ helpers (as tests/compat/test_compat.py)

def _first_label(label) -> np.ndarray:
    label = np.asarray(label)
    return label[:, 0] if label.ndim == 2 else label


def dataset(name, inputs: dict, label) -> Dataset:
    """Rows as a Dataset labelled with the first task's label."""
    return Dataset(name, "ctr", {k: np.asarray(v) for k, v in inputs.items()}, _first_label(label))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _auc(y, p):
    from sklearn.metrics import roc_auc_score
    y = np.asarray(y).reshape(-1)
    if len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, np.asarray(p).reshape(-1)))


def _ops(manifest) -> list:
    return sorted({n["op"] for n in manifest["graph"]["nodes"]})


def _embedding_quantized_fraction(manifest):
    tables = {k: v for k, v in manifest["params"].items() if v["role"] == "embedding"}
    total = sum(int(np.prod(v["shape"])) * 4 for v in tables.values())
    quant = sum(int(np.prod(v["shape"])) * 4 for v in tables.values() if v["kind"] == "rowwise")
    return {"fraction": quant / total if total else None, "rowwise_fp32_bytes": quant, "all_fp32_bytes": total,
            "kinds": sorted({v["kind"] for v in tables.values()})}


def _format_warnings(warnings, fmt):
    return [w for w in warnings if w.startswith(fmt) or f" {fmt} " in w or f"{fmt} artifact" in w]


# ------------------------------------------------------------------------------------------- one model

def run_model(lib, name, tmp: Path, search: bool) -> dict:
    from tests.compat import models
    row = {"library": lib, "model": name, "times_s": {}}
    t = row["times_s"]

    t0 = time.perf_counter()
    cm = models.build(lib, name)
    t["build"] = round(time.perf_counter() - t0, 3)
    row["source_metrics_library"] = cm.metrics
    n = len(next(iter(cm.inputs.values())))
    parity_in = {k: np.asarray(v)[:PARITY_ROWS] for k, v in cm.inputs.items()}
    parity_label = _first_label(cm.label)[:PARITY_ROWS]
    data = dataset(f"{lib}-{name}", {k: np.asarray(v)[PARITY_ROWS:] for k, v in cm.inputs.items()},
                   np.asarray(cm.label)[PARITY_ROWS:])
    train = dataset(f"{lib}-{name}-train", cm.train_inputs, cm.train_label)
    row["rows"] = {"parity": PARITY_ROWS, "data": n - PARITY_ROWS, "train": len(train)}

    t0 = time.perf_counter()
    want = cm.outputs_of(parity_in)
    t["source_predict"] = round(time.perf_counter() - t0, 3)
    row["output_width"] = int(want.shape[1])
    row["max_abs_source_output"] = float(np.max(np.abs(want)))
    src_auc = _auc(parity_label, want[:, 0])

    # ---- 1. fp32 with every app format
    fp32 = {"compiled": False}
    row["fp32"] = fp32
    t0 = time.perf_counter()
    try:
        res = ec.compile(cm.model, target="local", data=data, output=tmp / f"{lib}-{name}-fp32.ecb", plan=[],
                         train_data=train, formats=None, progress=False)
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        t["fp32_compile"] = round(time.perf_counter() - t0, 3)
        fp32["error"] = _first_line(e)
        fp32["traceback_tail"] = traceback.format_exc().strip().splitlines()[-6:]
        res = None
    else:
        t["fp32_compile"] = round(time.perf_counter() - t0, 3)
        fp32.update(compiled=True, size_bytes=res.size_bytes, model_bytes=res.model_bytes,
                    warnings=list(res.warnings), metrics_before=res.metrics_before, metrics_after=res.metrics_after)
        base = ecr.load(res.path, backend="numpy")
        fp32["ops"] = _ops(base.manifest)
        fp32["n_ops"] = len(fp32["ops"])
        fp32["n_nodes"] = len(base.manifest["graph"]["nodes"])
        fp32["output_forms"] = sorted({o.get("form") for o in base.outputs})
        arts = base.manifest.get("artifacts") or {}
        fp32["artifacts"] = {f: {"bytes": a.get("size_bytes"),
                                 "precision": a.get("precision"), "approximations": a.get("approximations"),
                                 "reference_parity": a.get("parity"), "metrics": a.get("metrics")}
                             for f, a in arts.items()}
        fp32["parity"], fp32["parity_error"], fp32["missing_artifact"] = {}, {}, {}
        for b in BACKENDS:
            t0 = time.perf_counter()
            if b != "numpy" and b not in arts:
                fp32["parity"][b] = None
                fp32["missing_artifact"][b] = _format_warnings(res.warnings, b) or ["(no warning names it)"]
                continue
            try:
                m = base if b == "numpy" else ecr.load(res.path, backend=b)
                got = models.bundle_outputs(m, parity_in)
                if got.shape != want.shape:
                    raise ValueError(f"output shape {got.shape} != source {want.shape}")
                fp32["parity"][b] = float(np.max(np.abs(got - want)))
            except Exception as e:  # noqa: BLE001
                fp32["parity"][b] = None
                fp32["parity_error"][b] = _first_line(e)
            t[f"fp32_parity_{b}"] = round(time.perf_counter() - t0, 3)
        fp32_model_bytes = res.model_bytes
        del base

    # ---- 2. the searched default plan
    if not search:
        row["searched"] = None
        return row
    s = {"target": "raspberry-pi-4"}
    row["searched"] = s
    if "top1_acc" in cm.metrics:
        # list-wise retrieval ([positive, negatives] per row): the planner ranks plans by a CTR metric of one
        # column, which does not measure this task (a plan chosen that way lost 0.12 top-1 accuracy)
        s["error"] = "skipped: list-wise head; the planner has no ranking metric for [positive, negatives] rows"
        return row
    t0 = time.perf_counter()
    # [B, T] multi-task heads: the planner ranks plans by the first task
    metric_output = "output[0]" if want.shape[1] > 1 else None
    try:
        q = ec.compile(cm.model, target="raspberry-pi-4", data=data, output=tmp / f"{lib}-{name}-searched.ecb",
                       plan=None, train_data=train, formats=["numpy"], progress=False, metric_output=metric_output)
    except Exception as e:  # noqa: BLE001 - e.g. BudgetError: no plan fits
        t["searched_compile"] = round(time.perf_counter() - t0, 3)
        s["error"] = _first_line(e)
        s["error_message"] = str(e)
        return row
    t["searched_compile"] = round(time.perf_counter() - t0, 3)
    qm = ecr.load(q.path, backend="numpy")
    s.update(size_bytes=q.size_bytes, model_bytes=q.model_bytes, budgets=q.budgets,
             size_ratio=(q.model_bytes / fp32_model_bytes) if res is not None else None,
             metrics_before=q.metrics_before, metrics_after=q.metrics_after,
             delta_metric_compile_data={k: q.metrics_after[k] - q.metrics_before[k]
                                        for k in q.metrics_before if k in q.metrics_after
                                        and isinstance(q.metrics_before[k], (int, float))},
             plan=[c.to_dict() for c in q.plan],
             describe=q.search.chosen.state.describe() if q.search is not None else None,
             plans_searched=len(q.search.candidates) if q.search is not None else None,
             embedding_quantized=_embedding_quantized_fraction(qm.manifest),
             parity_reference=q.parity, warnings=list(q.warnings))
    t0 = time.perf_counter()
    got = models.bundle_outputs(qm, parity_in)
    t["searched_heldout_eval"] = round(time.perf_counter() - t0, 3)
    bundle_auc = _auc(parity_label, got[:, 0])
    s["heldout"] = {"rows": PARITY_ROWS, "auc_source": src_auc, "auc_bundle": bundle_auc,
                    "delta_auc": (bundle_auc - src_auc) if bundle_auc is not None and src_auc is not None else None,
                    "max_abs_diff_vs_source": float(np.max(np.abs(got - want))) if got.shape == want.shape else None}
    if "top1_acc" in cm.metrics and got.shape == want.shape:
        # list-wise retrieval (YoutubeDNN): the model's own task is ranking the positive (column 0)
        # first among [pos, negs]; AUC of column 0 against the click label is only what compile measures
        s["heldout"]["top1_acc_source"] = float((want.argmax(1) == 0).mean())
        s["heldout"]["top1_acc_bundle"] = float((got.argmax(1) == 0).mean())
    return row


# ------------------------------------------------------------------------------------------------ output

def conditions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    versions = {}
    for d in ("deepctr-torch", "torch-rechub", "torch", "numpy", "executorch", "ai-edge-litert", "litert-torch",
              "edgecompress", "scikit-learn"):
        try:
            versions[d] = version(d)
        except PackageNotFoundError:
            versions[d] = None
    return {"machine": platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "torch_threads": torch.get_num_threads(),
            "versions": versions, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _fmt_parity(fp32, b):
    if not fp32.get("compiled"):
        return "-"
    v = fp32["parity"].get(b)
    if v is None:
        return "ERR" if b in fp32.get("parity_error", {}) else "none"
    return f"{v:.1e}"


def print_table(rows):
    head = (f"{'library':<14} {'model':<13} {'compiled':<8} {'#ops':>4}  {'par numpy':>9} {'par litert':>10} "
            f"{'par exec':>9}  {'size':>6}  {'ΔAUC ho':>8}  {'AUC src/bundle (held-out)':<26} plan")
    print(head)
    print("-" * len(head))
    for r in rows:
        f = r.get("fp32") or {}
        s = r.get("searched")
        if "error" in r:
            print(f"{r['library']:<14} {r['model']:<13} build failed: {r['error']}")
            continue
        comp = "yes" if f.get("compiled") else "NO"
        nops = str(f.get("n_ops", "-"))
        if s is None:
            size, dauc, aucs, plan = "-", "-", "", ""
        elif "error" in s:
            size, dauc, aucs, plan = "err", "err", "", "search failed (below)"
        else:
            size = f"{s['size_ratio']:.3f}" if s.get("size_ratio") is not None else "-"
            h = s["heldout"]
            dauc = f"{h['delta_auc']:+.4f}" if h["delta_auc"] is not None else "-"
            aucs = f"{h['auc_source']:.4f} / {h['auc_bundle']:.4f}" if h["delta_auc"] is not None else ""
            plan = s.get("describe") or ""
        print(f"{r['library']:<14} {r['model']:<13} {comp:<8} {nops:>4}  {_fmt_parity(f, 'numpy'):>9} "
              f"{_fmt_parity(f, 'litert'):>10} {_fmt_parity(f, 'executorch'):>9}  {size:>6}  {dauc:>8}  {aucs:<26} {plan}")
        if not f.get("compiled") and "error" in f:
            print(f"{'':<28} fp32 compile failed: {f['error'][:160]}")
        if s is not None and "error" in s:
            print(f"{'':<28} searched plan failed: {s['error'][:160]}")
        if s is not None and "top1_acc_source" in (s.get("heldout") or {}):
            h = s["heldout"]
            print(f"{'':<28} (AUC of the positive's logit vs the click label; the model's own task, top-1 of "
                  f"[pos, negs] held-out: {h['top1_acc_source']:.4f} -> {h['top1_acc_bundle']:.4f})")
        for b, msgs in (f.get("missing_artifact") or {}).items():
            print(f"{'':<28} no {b} artifact: {msgs[0][:160]}")
        for b, msg in (f.get("parity_error") or {}).items():
            print(f"{'':<28} {b} backend failed: {msg[:160]}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="fp32 (all formats) for 4 models, the searched plan for 2 of them")
    ap.add_argument("--models", default=None, help="comma-separated model names, e.g. DeepFM,DIN (default: all)")
    ap.add_argument("--library", default=None, choices=LIBRARIES, help="only this library's models")
    ap.add_argument("--out", default=str(OUT), help=f"JSON output (default {OUT.relative_to(ROOT)})")
    args = ap.parse_args(argv)

    from tests.compat import models
    cases = list(models.BUILDERS)
    if args.quick:
        cases = [c for c in QUICK_FP32 if c in models.BUILDERS]
    if args.library:
        cases = [c for c in cases if c[0] == args.library]
    if args.models:
        wanted = {m.strip() for m in args.models.split(",") if m.strip()}
        unknown = wanted - {n for _, n in models.BUILDERS}
        if unknown:
            ap.error(f"unknown model(s) {', '.join(sorted(unknown))}; known: "
                     f"{', '.join(sorted({n for _, n in models.BUILDERS}))}")
        cases = [c for c in cases if c[1] in wanted]
    if not cases:
        ap.error("no model matches the filters")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cond = conditions()
    rows = []
    t_all = time.perf_counter()

    def dump(complete):
        out.write_text(json.dumps({"schema": "edgecompress.bench.compat/1", "quick": args.quick, "complete": complete,
                                   "parity_rows": PARITY_ROWS, "conditions": cond, "models": rows,
                                   "total_s": round(time.perf_counter() - t_all, 1)}, indent=1, default=str))

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for i, (lib, name) in enumerate(cases):
            search = (lib, name) in QUICK_SEARCH if args.quick else True
            t0 = time.perf_counter()
            print(f"[{i + 1}/{len(cases)}] {lib} {name} ...", flush=True)
            try:
                row = run_model(lib, name, tmp, search)
            except Exception as e:  # noqa: BLE001 - a builder failing is a result too
                row = {"library": lib, "model": name, "error": _first_line(e),
                       "traceback_tail": traceback.format_exc().strip().splitlines()[-6:]}
            row["total_s"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            dump(False)
            for p in tmp.glob("*"):       # bundles are not kept
                p.unlink()
            print(f"    {row['total_s']:.1f} s  {json.dumps(row.get('times_s', {}))}", flush=True)
    dump(True)
    print()
    print_table(rows)
    print(f"\n{len(rows)} model(s) in {time.perf_counter() - t_all:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
