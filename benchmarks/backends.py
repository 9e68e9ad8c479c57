"""Side-by-side latency and size of one compressed model on every backend.

    .venv/bin/python benchmarks/backends.py [--models dlrm,deepfm] [--precisions fp32,int8,int4]
                                            [--threads 2] [--iters 200] [--quick]

For each zoo model (untrained weights: latency and size do not depend on the
values) and precision, compile() one bundle carrying the numpy graph, a .pte
and a .tflite, then time on the SAME inputs (the bundle's reference rows
resampled to batch 1 and 256), in this process:

- ours: ``numpy`` (the bundle graph), ``executorch`` (.pte), ``litert`` (.tflite),
  each through ``edgecompress_runtime.load(...).predict`` (input validation included);
- peers: PyTorch eager (fp32: the source model; int8/int4: torch.ao weight-only
  quint8/quint4x2 embeddings + dynamic int8 Linear) and ONNX Runtime (the
  Embedding form exported from ProgramModule; int8/int4: onnxruntime's
  quantize_dynamic, int8 weights for Gather and MatMul/Gemm, as it has no int4 gather).

Writes benchmarks/results/backends.json and prints a table per model and
precision: artifact size, p50/p99 ms at batch 1 and 256, ratio to the fastest.
Every backend gets the same thread count (--threads; BLAS, XNNPACK, TFLite,
torch and ORT intra-op).
"""
from __future__ import annotations

import argparse
import os
import sys


def _args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="dlrm,dlrm_multihot,deepfm,wide_deep,two_tower,neumf")
    ap.add_argument("--precisions", default="fp32,int8,int4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--batches", default="1,256")
    ap.add_argument("--quick", action="store_true", help="small tables, few iterations (smoke test)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                   "backends.json"))
    return ap.parse_args(argv)


ARGS = _args()
# thread counts must be fixed before numpy / torch load their thread pools
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "EDGECOMPRESS_RUNTIME_THREADS"):
    os.environ[var] = str(ARGS.threads)
# idle thread pools must not spin while another backend runs (measured: spinning ORT / OpenMP
# workers made the next backend's small BLAS calls 30x slower on this 2-core machine)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import copy  # noqa: E402
import dataclasses  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import edgecompress as ec  # noqa: E402
import edgecompress_runtime as ecr  # noqa: E402
from edgecompress.data import synthetic_ctr  # noqa: E402
from edgecompress.data.movielens import leave_last_out  # noqa: E402
from edgecompress.graph.torch_exec import ProgramModule  # noqa: E402
from edgecompress.models.zoo import model_for_data  # noqa: E402
from edgecompress.passes import EmbeddingRowwiseQuant, LinearInt8Weights  # noqa: E402
from edgecompress.targets import load_target  # noqa: E402
from edgecompress_runtime.bench import batch_from_reference, percentiles  # noqa: E402
from edgecompress_runtime.sysinfo import system_facts  # noqa: E402

warnings.filterwarnings("ignore")
torch.set_num_threads(ARGS.threads)

PLANS = {"fp32": [], "int8": [EmbeddingRowwiseQuant(bits=8), LinearInt8Weights()],
         "int4": [EmbeddingRowwiseQuant(bits=4), LinearInt8Weights()]}
CTR_VOCAB = (50_000, 20_000, 10_000, 5_000, 1_000)
MODELS = {   # name -> (zoo model, data kind, model kwargs)
    "dlrm": ("dlrm", "ctr", {"embedding_dim": 32, "bottom_mlp": (64,), "top_mlp": (64, 32)}),
    "dlrm_multihot": ("dlrm", "multi_hot", {"embedding_dim": 32, "bottom_mlp": (64,), "top_mlp": (64, 32)}),
    "deepfm": ("deepfm", "ctr", {"embedding_dim": 32, "hidden": (64, 32)}),
    "wide_deep": ("wide_deep", "ctr", {"embedding_dim": 32, "hidden": (64, 32)}),
    "two_tower": ("two_tower", "retrieval", {"embedding_dim": 32}),
    "neumf": ("neumf", "retrieval", {"mf_dim": 32}),
}


def _data(kind: str, quick: bool):
    vocab = tuple(v // 20 for v in CTR_VOCAB) if quick else CTR_VOCAB
    if kind == "ctr":
        return synthetic_ctr(n=4000, vocab_sizes=vocab, dense_dim=13, seed=1).split((0.5, 0.5))
    if kind == "multi_hot":
        return synthetic_ctr(n=4000, vocab_sizes=vocab, dense_dim=13, multi_hot=4, seed=2).split((0.5, 0.5))
    rng = np.random.default_rng(0)
    n_users, n_items = (2_500, 500) if quick else (50_000, 5_000)
    users = rng.choice(n_users, 100, replace=False)          # 100 test users: all items ranked for each
    user = rng.choice(users, 3000)
    item = rng.integers(0, n_items, 3000)
    return leave_last_out(user, item, rng.random(3000), n_users, n_items)


# --------------------------------------------------------------------------- peers

class _Contiguous(nn.Module):
    """torch.ao's quantized embedding bags refuse non-contiguous ids (DLRM slices fields)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, *args, **kw):
        return self.inner(*[a.contiguous() if isinstance(a, torch.Tensor) else a for a in args], **kw)


def torch_peer(model: nn.Module, precision: str):
    """(callable on numpy feeds, size bytes, label)."""
    from torch.ao.quantization import (convert, float_qparams_weight_only_qconfig,
                                       float_qparams_weight_only_qconfig_4bit, prepare, quantize_dynamic)
    m = copy.deepcopy(model).eval()
    label = "fp32 (source model, EmbeddingBag)"
    if precision != "fp32":
        four = 0
        for mod in m.modules():
            if isinstance(mod, (nn.Embedding, nn.EmbeddingBag)) and mod.embedding_dim % 2 == 0:
                if precision == "int4" and isinstance(mod, nn.EmbeddingBag):
                    mod.qconfig = float_qparams_weight_only_qconfig_4bit
                    four += 1
                else:
                    mod.qconfig = float_qparams_weight_only_qconfig
        prepare(m, inplace=True)
        convert(m, inplace=True)
        for name, mod in list(m.named_modules()):
            if type(mod).__module__.startswith("torch.ao.nn.quantized") and "Embedding" in type(mod).__name__:
                parent = m.get_submodule(name.rsplit(".", 1)[0]) if "." in name else m
                parent._modules[name.rsplit(".", 1)[-1]] = _Contiguous(mod)
        m = quantize_dynamic(m, {nn.Linear}, dtype=torch.qint8)
        label = ("torch.ao: quint8 row-wise tables" + (", quint4x2 bags" if four else "")
                 + ", dynamic int8 Linear")
        if precision == "int4" and not four:
            label += " (no 4-bit nn.Embedding in torch.ao: 8-bit)"
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    names = list(model.input_names)

    def run(feeds):
        with torch.no_grad():
            return m(*[torch.from_numpy(feeds[k]) for k in names]).numpy()
    return run, len(buf.getvalue()), label


def onnx_peer(program, precision: str):
    import onnxruntime as ort
    pm = ProgramModule(program).eval()
    names = list(program.graph["inputs"])
    example = tuple(torch.as_tensor(np.asarray(program.example[k])) for k in names)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(pm, example, buf, input_names=names, output_names=["out"],
                          dynamic_axes={**{k: {0: "B"} for k in names}, "out": {0: "B"}},
                          dynamo=False, opset_version=17)
    model_bytes = buf.getvalue()
    label = "fp32 (Embedding form from ProgramModule)"
    if precision != "fp32":
        from onnxruntime.quantization import QuantType, quantize_dynamic
        with tempfile.TemporaryDirectory() as d:
            src, dst = Path(d) / "m.onnx", Path(d) / "q.onnx"
            src.write_bytes(model_bytes)
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm", "Gather"])
            model_bytes = dst.read_bytes()
        label = "onnxruntime quantize_dynamic int8 (Gather + MatMul/Gemm)" + (
            "; no int4 gather: 8-bit" if precision == "int4" else "")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = ARGS.threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])

    def run(feeds):
        return sess.run(None, {k: feeds[k] for k in names})[0]
    return run, len(model_bytes), label


# --------------------------------------------------------------------------- timing

# "numpy-blas1": the numpy backend with OpenBLAS limited to one thread (threadpoolctl, set
# around its timing blocks only). On this shared 2-core VM, 2-thread BLAS calls stall whenever
# the other thread is descheduled; a runtime option for this is proposed, not built.
LIMITED = {"numpy-blas1"}


def _limits(name):
    import contextlib
    if name not in LIMITED:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits
    return threadpool_limits(1, "blas")


def time_interleaved(fns: dict, feeds, warmup, iters, rounds: int = 10) -> dict:
    """p50/p99 per backend, timed in ``rounds`` interleaved blocks so that
    load from other processes on this machine hits every backend alike. Each
    block starts after a pause and 3 untimed calls, so that the previous
    backend's thread pool is idle and this one's caches are warm."""
    import contextlib
    for k, fn in fns.items():
        with _limits(k):
            for _ in range(warmup):
                fn(feeds)
    times = {k: [] for k in fns}
    per = max(1, iters // rounds)
    for _ in range(rounds):
        for k, fn in fns.items():
            time.sleep(0.02)            # let the previous backend's worker threads go idle
            with _limits(k) if k in LIMITED else contextlib.nullcontext():
                for _ in range(3):
                    fn(feeds)
                for _ in range(per):
                    t = time.perf_counter()
                    fn(feeds)
                    times[k].append(time.perf_counter() - t)
    out = {}
    for k, ts in times.items():
        p = percentiles(ts)
        out[k] = {"p50_ms": p["p50_ms"], "p99_ms": p["p99_ms"], "mean_ms": p["mean_ms"], "iters": len(ts)}
    return out


def bench_case(name, precision, out_dir, batches, cache):
    zoo, kind, kw = MODELS[name]
    if (zoo, kind, name) not in cache:
        data = _data(kind, ARGS.quick)
        train_ds, eval_data = data if isinstance(data, tuple) else (data.train, data)
        torch.manual_seed(0)
        cache[(zoo, kind, name)] = (model_for_data(zoo, train_ds, **kw).eval(), eval_data)
    model, eval_data = cache[(zoo, kind, name)]
    target = dataclasses.replace(load_target("local"), batch_sizes=tuple(batches))
    t0 = time.perf_counter()
    res = ec.compile(model, target=target, data=eval_data, output=out_dir / f"{name}-{precision}.ecb",
                     plan=PLANS[precision], formats=["numpy", "executorch", "litert"], progress=False)
    compile_s = time.perf_counter() - t0
    base = ecr.load(res.path, backend="numpy")
    arts = base.manifest.get("artifacts", {})
    ref_in, ref_out = base.reference()
    art_bytes = sum(a["size_bytes"] for a in arts.values())
    rows = []
    runners = {"numpy": (base.predict, res.size_bytes - art_bytes, "bundle graph + arrays (npy)",
                         base.check_parity()["max_abs_diff"])}
    try:
        import threadpoolctl  # noqa: F401
        runners["numpy-blas1"] = (base.predict, runners["numpy"][1], "numpy backend, OpenBLAS limited to 1 thread",
                                  runners["numpy"][3])
    except ImportError:
        pass
    for b in ("executorch", "litert"):
        if b in arts:
            m = ecr.load(res.path, backend=b)
            runners[b] = (m.predict, arts[b]["size_bytes"], arts[b]["precision"], arts[b]["parity"]["max_abs_diff"])
    # the peers run what they can express; their diff is against the host's reference of THIS plan
    from edgecompress.graph import lower
    from edgecompress.passes import apply_plan
    program = lower(model, {k: np.asarray(v[:8]) for k, v in ref_in.items()})
    program = apply_plan(program, PLANS[precision])
    for peer, make in (("torch", lambda: torch_peer(model, precision)), ("onnxruntime", lambda: onnx_peer(program, precision))):
        try:
            fn, size, label = make()
            diff = float(np.max(np.abs(np.asarray(fn(ref_in), np.float32).reshape(-1) - ref_out.reshape(-1))))
            runners[peer] = (fn, size, label, diff)
        except Exception as e:   # noqa: BLE001 - a peer that cannot run is reported, not fatal
            rows.append({"model": name, "precision": precision, "backend": peer, "error": str(e).splitlines()[0][:200]})
    timed = {b: time_interleaved({k: v[0] for k, v in runners.items()}, batch_from_reference(ref_in, b),
                                 ARGS.warmup, ARGS.iters) for b in batches}
    for backend, (fn, size, label, diff) in runners.items():
        rows.append({"model": name, "precision": precision, "backend": backend, "size_bytes": int(size),
                     "recipe": label, "max_abs_diff_vs_host": diff,
                     "latency": {str(b): timed[b][backend] for b in batches}})
    ok = [r for r in rows if "latency" in r]
    for b in batches:
        best = min(r["latency"][str(b)]["p50_ms"] for r in ok)
        best_peer = min((r["latency"][str(b)]["p50_ms"] for r in ok if not r["backend"].startswith("numpy")),
                        default=best)
        for r in ok:
            r["latency"][str(b)]["ratio_to_fastest"] = r["latency"][str(b)]["p50_ms"] / best
            if r["backend"].startswith("numpy"):
                r["latency"][str(b)]["ratio_to_fastest_peer"] = r["latency"][str(b)]["p50_ms"] / best_peer
    for r in ok:
        r["compile_s"] = round(compile_s, 1)
    return rows


def table(rows, batches) -> str:
    out = []
    key = None
    for r in rows:
        if (r["model"], r["precision"]) != key:
            key = (r["model"], r["precision"])
            out += ["", f"== {key[0]} / {key[1]} ==",
                    f"{'backend':<12} {'size':>9} {'max|diff|':>9} "
                    + " ".join(f"{'b=' + str(b) + ' p50/p99 ms':>19} {'x':>5}" for b in batches)]
        if "error" in r:
            out.append(f"{r['backend']:<12} error: {r['error']}")
            continue
        line = f"{r['backend']:<12} {r['size_bytes'] / 1e6:>7.2f}MB {r['max_abs_diff_vs_host']:>9.1e} "
        line += " ".join(f"{r['latency'][str(b)]['p50_ms']:>9.3f}/{r['latency'][str(b)]['p99_ms']:>9.3f} "
                         f"{r['latency'][str(b)]['ratio_to_fastest']:>5.2f}" for b in batches)
        out.append(line)
    return "\n".join(out)


def main() -> int:
    batches = [int(b) for b in ARGS.batches.split(",")]
    if ARGS.quick:
        ARGS.iters, ARGS.warmup = min(ARGS.iters, 30), min(ARGS.warmup, 5)
    rows, cache = [], {}
    with tempfile.TemporaryDirectory() as d:
        for name in ARGS.models.split(","):
            for precision in ARGS.precisions.split(","):
                t = time.perf_counter()
                case = bench_case(name, precision, Path(d), batches, cache)
                rows += case
                print(table(case, batches), flush=True)
                print(f"({time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)
    summary = []
    for r in rows:
        if r["backend"] == "numpy" and "latency" in r:
            one = next((x for x in rows if x["backend"] == "numpy-blas1" and x["model"] == r["model"]
                        and x["precision"] == r["precision"]), None)
            summary.append({"model": r["model"], "precision": r["precision"],
                            **{f"numpy_vs_fastest_peer_b{b}": r["latency"][str(b)]["ratio_to_fastest_peer"]
                               for b in batches},
                            **({f"numpy_blas1_vs_fastest_peer_b{b}": one["latency"][str(b)]["ratio_to_fastest_peer"]
                                for b in batches} if one else {})})
    result = {"schema": "edgecompress.backends-bench/1", "threads": ARGS.threads, "iters": ARGS.iters,
              "warmup": ARGS.warmup, "batches": batches, "quick": ARGS.quick,
              "system": system_facts(), "python": platform.python_version(),
              "versions": _versions(), "rows": rows, "numpy_ratio_summary": summary}
    Path(ARGS.out).parent.mkdir(parents=True, exist_ok=True)
    Path(ARGS.out).write_text(json.dumps(result, indent=1))
    print("\nnumpy backend p50 / fastest peer p50 (peers: executorch, litert, torch, onnxruntime):")
    for s in summary:
        print(f"  {s['model']:<14} {s['precision']:<5} " + "  ".join(
            f"b={b}: {s[f'numpy_vs_fastest_peer_b{b}']:.2f}x" for b in batches)
            + ("   (1 BLAS thread: " + "  ".join(f"b={b}: {s[f'numpy_blas1_vs_fastest_peer_b{b}']:.2f}x"
                                            for b in batches) + ")" if f"numpy_blas1_vs_fastest_peer_b{batches[0]}" in s
               else ""))
    print(f"\nwrote {ARGS.out}")
    return 0


def _versions() -> dict:
    from importlib.metadata import version
    out = {}
    for d in ("numpy", "torch", "executorch", "ai-edge-litert", "litert-torch", "onnxruntime", "onnx"):
        try:
            out[d] = version(d)
        except Exception:   # noqa: BLE001
            pass
    return out


if __name__ == "__main__":
    sys.exit(main())
