"""Probe every compat model (tests/compat/models.py) with torch.export.

    .venv/bin/python tests/compat/probe.py [NAME ...] [--json PATH]

Per model: does ``torch.export.export(model, args, dynamic_shapes=<batch dim>, strict=False)`` work
(else the first line of the error, and which fallback export flags work); does the exported program
run at other batch sizes and match eager; the ATen ops after ``ep.run_decompositions(table)`` with
``table = torch.export.default_decompositions()`` minus linear / embedding / embedding_bag (as
edgecompress.graph.lower keeps them); the output structure; whether each output is a probability
(ends in aten.sigmoid). Prints one table and writes JSON (default /tmp/compat_probe.json).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings

import torch
from torch.export.graph_signature import OutputKind

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))      # the repo root, for tests.compat

try:
    from tests.compat.models import BUILDERS  # noqa: E402
except ImportError:     # an installed regular package named "tests" shadows the repo's namespace package
    import importlib.util
    _spec = importlib.util.spec_from_file_location("compat_models", os.path.join(HERE, "models.py"))
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules["compat_models"] = _mod
    _spec.loader.exec_module(_mod)
    BUILDERS = _mod.BUILDERS

aten = torch.ops.aten
PRESERVED = (aten.linear.default, aten.embedding.default, aten.embedding_bag.default,
             aten.embedding_bag.padding_idx)
# ops that pass a value through unchanged in meaning (for "is this output a sigmoid?")
DATA_DEPENDENT = {"_assert_scalar", "sym_constrain_range", "sym_constrain_range_for_size", "nonzero", "item",
                  "_local_scalar_dense", "masked_select", "unique", "_unique2", "repeat_interleave"}
PASS_THROUGH = {"view", "_unsafe_view", "reshape", "squeeze", "unsqueeze", "clone", "alias", "permute",
                "transpose", "expand", "slice", "select", "contiguous", "_to_copy", "detach"}


try:    # the ATen ops edgecompress's numpy runtime implements (optional cross-check)
    from edgecompress_runtime.ops import OPS as _OPS
    import edgecompress_runtime.aten  # noqa: F401  (registers the ATen-named ops)
    RUNTIME_OPS = set(_OPS)
except Exception:  # the probe does not need edgecompress
    RUNTIME_OPS = None
# dropped by edgecompress.graph.translate (_SKIP) rather than run
LOWERING_SKIPS = {"aten._assert_tensor_metadata.default", "aten._assert_scalar.default"}


def runtime_has(name: str) -> bool:
    """aten.<packet>.<overload> is implemented by the runtime: by its ATen name (edgecompress_runtime.aten) or as
    one of the runtime's own ops that edgecompress.graph.lower maps whole ATen ops to."""
    full = name.replace("aten.", "", 1)
    packet = full.split(".")[0]
    return (name in LOWERING_SKIPS or full in RUNTIME_OPS or packet in RUNTIME_OPS
            or {"linalg_vector_norm": "vector_norm", "_softmax": "softmax"}.get(packet) in RUNTIME_OPS)


def decomp_table():
    table = torch.export.default_decompositions()
    for op in PRESERVED:
        table.pop(op, None)
    return table


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(e).__name__}: {line}"[:300]


def dynamic_shapes(cm, batch):
    if cm.forward_style == "single_tensor":
        return ({0: batch},)
    if cm.forward_style == "dict":
        return ({k: {0: batch} for k in cm.inputs},)
    return tuple({0: batch} for _ in cm.inputs)


def try_export(cm, args, dyn, strict=False):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ep = torch.export.export(cm.model, args, dynamic_shapes=dyn, strict=strict)
    msgs = sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0][:200]}" for w in caught
                   if not issubclass(w.category, (FutureWarning, DeprecationWarning))})
    return ep, msgs


def op_name(target) -> str:
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}.{target._schema.name.split('::')[-1]}.{target._overloadname}"
    return getattr(target, "__name__", str(target))


def is_probability(node) -> bool:
    """True when the value comes from aten.sigmoid through view-like ops / cat / stack."""
    if not isinstance(node, torch.fx.Node) or node.op != "call_function":
        return False
    name = op_name(node.target)
    packet = name.split(".")[1] if name.startswith("aten.") else name
    if packet == "sigmoid":
        return True
    if packet in PASS_THROUGH:
        return is_probability(node.args[0])
    if packet in ("cat", "stack", "concat"):
        return all(is_probability(a) for a in node.args[0])
    return False


def _packet(node) -> str:
    name = op_name(node.target)
    return name.split(".")[1] if name.startswith("aten.") else name


def embedding_sources(dep) -> list:
    """For each aten.embedding: which table (state_dict name), which user input and which slices of it
    give the ids, the index shape, and the casts on the way (deepctr: a float column of X -> int64)."""
    params = {spec.arg.name: spec.target for spec in dep.graph_signature.input_specs
              if spec.kind.name in ("PARAMETER", "BUFFER")}
    users = {spec.arg.name: spec.arg.name for spec in dep.graph_signature.input_specs if spec.kind.name == "USER_INPUT"}
    out = []
    for node in dep.graph.nodes:
        if node.op != "call_function" or _packet(node) != "embedding":
            continue
        weight, idx = node.args[0], node.args[1]
        path, cur = [], idx
        while isinstance(cur, torch.fx.Node) and cur.op == "call_function" and _packet(cur) in PASS_THROUGH | {"_to_copy", "_assert_tensor_metadata"}:
            if _packet(cur) == "slice":
                d, lo, hi = (list(cur.args[1:4]) + [0, None, None])[:3]
                if not (lo in (0, None) and (hi is None or hi >= sys.maxsize)):     # skip full slices
                    path.append(f"dim{d}[{lo}:{hi}]")
            elif _packet(cur) == "_to_copy":
                path.append(f"->{str(cur.kwargs.get('dtype')).replace('torch.', '')}")
            elif _packet(cur) not in ("clone", "alias"):
                path.append(_packet(cur))
            cur = cur.args[0]
        src = users.get(cur.name, f"<{cur.name}>") if isinstance(cur, torch.fx.Node) else str(cur)
        val = idx.meta.get("val") if isinstance(idx, torch.fx.Node) else None
        out.append({"table": params.get(getattr(weight, "name", ""), str(weight)), "input": src,
                    "path": " ".join(reversed(path)), "index_rank": None if val is None else val.dim()})
    return out


def describe(value):
    if isinstance(value, torch.Tensor):
        return {"type": "tensor", "shape": list(value.shape), "dtype": str(value.dtype).replace("torch.", "")}
    if isinstance(value, (tuple, list)):
        return {"type": type(value).__name__, "items": [describe(v) for v in value]}
    if isinstance(value, dict):
        return {"type": "dict", "items": {k: describe(v) for k, v in value.items()}}
    return {"type": type(value).__name__}


def short(d) -> str:
    if d["type"] == "tensor":
        return "tensor[" + ",".join(str(s) for s in d["shape"]) + "]"
    if d["type"] in ("tuple", "list"):
        return d["type"] + "(" + ", ".join(short(x) for x in d["items"]) + ")"
    if d["type"] == "dict":
        return "dict(" + ", ".join(f"{k}: {short(v)}" for k, v in d["items"].items()) + ")"
    return d["type"]


def flat(value):
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in flat(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in flat(v)]
    return []


def graph_hazards(ep) -> list:
    """Things in the exported graph an integrator has to know about."""
    out = []
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        name = op_name(node.target)
        packet = name.split(".")[1] if name.startswith("aten.") else name
        if packet in DATA_DEPENDENT:
            out.append(f"data-dependent op: {name}")
    for sym, vr in ep.range_constraints.items():
        lo, hi = vr.lower, vr.upper
        if str(lo) not in ("0", "1", "2") or str(hi) not in ("int_oo", "oo", str(sys.maxsize - 1)):
            out.append(f"range {sym}: [{lo}, {hi}]")
    consts = list(getattr(ep.graph_signature, "lifted_tensor_constants", []))
    if consts:
        shapes = [list(ep.constants[c].shape) for c in consts if c in ep.constants]
        out.append(f"{len(consts)} lifted tensor constant(s) (tensors created in forward): shapes {shapes}")
    bufs = list(ep.graph_signature.buffers_to_mutate.items()) if hasattr(ep.graph_signature, "buffers_to_mutate") else []
    if bufs:
        out.append(f"mutates buffers: {[b for _, b in bufs]}")
    return sorted(set(out))


def probe(cm) -> dict:
    rec = {"library": cm.library, "model": cm.name, "build_train_s": cm.seconds, "metrics": cm.metrics,
           "forward_style": cm.forward_style, "forward_arg": cm.forward_arg,
           "inputs": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in cm.inputs.items()},
           "declared_outputs": cm.outputs, "notes": list(cm.notes)}
    args = cm.torch_args()
    with torch.no_grad():
        eager = cm.model(*args)
    rec["output"] = describe(eager)
    batch = torch.export.Dim("batch")
    t0 = time.perf_counter()
    try:
        ep, msgs = try_export(cm, args, dynamic_shapes(cm, batch))
        rec["export"] = "ok"
        rec["export_warnings"] = msgs
    except Exception as e:  # report, then find which flags get it through
        rec["export"] = "error"
        rec["export_error"] = first_line(e)
        rec["export_traceback_tail"] = traceback.format_exc().strip().splitlines()[-6:]
        ep = None
        fixes = {}
        for label, dyn, strict in (("Dim.AUTO batch", dynamic_shapes(cm, torch.export.Dim.AUTO), False),
                                   ("static shapes", None, False),
                                   ("strict=True + Dim('batch')", dynamic_shapes(cm, torch.export.Dim("batch")), True)):
            try:
                ep2, _ = try_export(cm, args, dyn, strict=strict)
                fixes[label] = "ok"
                ep = ep if ep is not None else ep2
            except Exception as e2:
                fixes[label] = first_line(e2)
        rec["fallbacks"] = fixes
    rec["export_s"] = round(time.perf_counter() - t0, 3)
    if ep is None:
        return rec
    try:
        dep = ep.run_decompositions(decomp_table())
    except Exception as e:
        rec["decompose_error"] = first_line(e)
        return rec
    ops, other = {}, {}
    for node in dep.graph.nodes:
        if node.op == "call_function":
            name = op_name(node.target)
            bucket = ops if name.startswith("aten.") else other
            bucket[name] = bucket.get(name, 0) + 1
    rec["aten_ops"] = dict(sorted(ops.items()))
    rec["other_call_functions"] = dict(sorted(other.items()))
    out_node = next(n for n in dep.graph.nodes if n.op == "output")
    res = out_node.args[0]
    outs = list(res) if isinstance(res, (tuple, list)) else [res]
    user_outs = [o for o, spec in zip(outs, dep.graph_signature.output_specs) if spec.kind == OutputKind.USER_OUTPUT]
    rec["output_is_sigmoid"] = [is_probability(o) for o in user_outs]
    rec["graph_hazards"] = graph_hazards(dep)
    rec["embedding_sources"] = embedding_sources(dep)
    rec["linear_input_ranks"] = sorted({n.args[0].meta["val"].dim() for n in dep.graph.nodes
                                        if n.op == "call_function" and _packet(n) == "linear"
                                        and "val" in getattr(n.args[0], "meta", {})})
    # the exported program at the probe batch, at batch 1 and at an odd batch: same as eager?
    checks = {}
    module = dep.module()
    for n in (len(next(iter(cm.inputs.values()))), 1, 7):
        a = cm.torch_args(cm.rows(cm.inputs, slice(0, n)))
        got = want = None
        with torch.no_grad():
            try:
                got = flat(module(*a))
            except Exception as e:
                checks[str(n)] = "exported: " + first_line(e)
            try:
                want = flat(cm.model(*a))
            except Exception as e:
                checks[str(n)] = (checks.get(str(n), "") + " | eager: " + first_line(e)).lstrip(" |")
        if got is not None and want is not None:
            checks[str(n)] = round(max(float((g - w).abs().max()) for g, w in zip(got, want)), 8)
    rec["max_abs_diff_vs_eager"] = checks
    if RUNTIME_OPS is not None:
        rec["not_in_edgecompress_runtime"] = sorted(k for k in ops if not runtime_has(k))
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="model names (any library) or library:name; default all")
    ap.add_argument("--json", default="/tmp/compat_probe.json")
    ns = ap.parse_args(argv)
    torch.set_num_threads(1)        # see models._one_thread: a loaded 2-core VM stalls 2 OpenMP threads
    warnings.filterwarnings("ignore", category=FutureWarning)   # torch.export's own LeafSpec deprecation
    records, t_all = [], time.perf_counter()
    for (library, name), fn in BUILDERS.items():
        if ns.names and name not in ns.names and f"{library}:{name}" not in ns.names:
            continue
        try:
            cm = fn()
        except Exception as e:
            records.append({"library": library, "model": name, "build_error": first_line(e)})
            continue
        rec = probe(cm)
        records.append(rec)
        print(f"  probed {library}:{name} ({cm.seconds:.2f}s build+train, {rec.get('export_s', 0):.2f}s export)",
              file=sys.stderr, flush=True)
    total = round(time.perf_counter() - t_all, 2)
    with open(ns.json, "w") as f:
        json.dump({"torch": torch.__version__, "total_s": total,
                   "build_train_s": round(sum(r.get("build_train_s", 0) for r in records), 2),
                   "models": records}, f, indent=1)
    print_table(records)
    print(f"\nbuild+train total {sum(r.get('build_train_s', 0) for r in records):.1f}s, "
          f"whole probe {total:.1f}s; JSON: {ns.json}")


def fmt_ops(ops: dict) -> str:
    return " ".join(k.replace("aten.", "").replace(".default", "") + (f"x{v}" if v > 1 else "")
                    for k, v in ops.items())


def print_table(records):
    rows = [("library", "model", "export", "=eager N/1/7", "output", "sigmoid", "#ops", "!runtime", "held-out")]
    for r in records:
        if "build_error" in r:
            rows.append((r["library"], r["model"], "BUILD: " + r["build_error"], "", "", "", "", "", ""))
            continue
        diffs = r.get("max_abs_diff_vs_eager", {})
        b = "/".join("ok" if isinstance(v, float) and v < 1e-4 else "FAIL" for v in diffs.values()) or "-"
        sig = r.get("output_is_sigmoid")
        missing = r.get("not_in_edgecompress_runtime")
        rows.append((r["library"], r["model"], r["export"] if r["export"] == "ok" else "ERROR", b,
                     short(r["output"]), "-" if sig is None else ("yes" if all(sig) else "no"),
                     str(len(r.get("aten_ops", {}))), "-" if missing is None else str(len(missing)),
                     " ".join(f"{k}={v}" for k, v in r["metrics"].items())))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("\nATen ops after run_decompositions (linear / embedding / embedding_bag kept):")
    for r in records:
        if "aten_ops" in r:
            print(f"  {r['library']}:{r['model']}: {fmt_ops(r['aten_ops'])}")
            if r.get("other_call_functions"):
                print(f"      non-aten: {fmt_ops(r['other_call_functions'])}")
    def bad_batches(r):
        return {k: v for k, v in r.get("max_abs_diff_vs_eager", {}).items() if not (isinstance(v, float) and v < 1e-4)}

    problems = [r for r in records if r.get("export") != "ok" or r.get("graph_hazards") or r.get("export_warnings")
                or "decompose_error" in r or bad_batches(r) or r.get("not_in_edgecompress_runtime")]
    if problems:
        print("\nExport problems / hazards:")
        for r in problems:
            print(f"  {r['library']}:{r['model']}:")
            if r.get("export") == "error":
                print(f"      export error: {r['export_error']}")
                for k, v in r.get("fallbacks", {}).items():
                    print(f"      with {k}: {v}")
            if "decompose_error" in r:
                print(f"      decompose error: {r['decompose_error']}")
            for h in r.get("graph_hazards", []):
                print(f"      {h}")
            for w in r.get("export_warnings", []):
                print(f"      export warning: {w}")
            for k, v in bad_batches(r).items():
                print(f"      batch {k}: {v}")
            if r.get("not_in_edgecompress_runtime"):
                print(f"      not in edgecompress_runtime ops: {', '.join(r['not_in_edgecompress_runtime'])}")
    union = {}
    for r in records:
        for op in r.get("aten_ops", {}):
            union.setdefault(op, []).append(f"{r['library'][:7]}:{r['model']}")
    print(f"\nUnion of ATen ops ({len(union)}), with the number of models using each:")
    print("  " + ", ".join(f"{k.replace('aten.', '')}({len(v)})" for k, v in sorted(union.items())))


if __name__ == "__main__":
    main()
