"""Memory budgets per shipped format: does every artifact fit, and what does each format lose?

    .venv/bin/python benchmarks/formats.py [--fractions 4,16]

For a DLRM of our zoo and a DCN-style model written by hand (cross network + MLP), both on
synthetic CTR data (50k rows: 80 % train, 10 % validation, 10 % test, 8 sparse fields up to
20,000 ids, 16-wide embeddings; 4 epochs):
1. fp32 (``plan=[]``) with the numpy bundle, the ExecuTorch .pte and the LiteRT .tflite:
   the bytes of each format at full precision;
2. the planner at memory budgets of 1/4 and 1/16 of the fp32 numpy bundle, shipping all three
   formats (latency budget 1 s, so memory alone binds), choosing on validation rows: per
   format its exact bytes against the budget, its metric on test rows, its Δmetric against the
   source model on the same rows, and its max |output - source| on 1,000 test rows; or,
   when no plan fits, the compiler's message (per format, the smallest plan found), and then
   each app format shipped alone with the numpy bundle.

Writes benchmarks/results/formats.json and prints a table."""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.pop("EDGECOMPRESS_FORMATS", None)

import edgecompress as ec  # noqa: E402
from edgecompress.data import synthetic_ctr  # noqa: E402
from edgecompress.errors import CompileError  # noqa: E402
from edgecompress.errors import BudgetError  # noqa: E402
from edgecompress.targets import load_target  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "formats.json"
FORMATS = ["numpy", "executorch", "litert"]


def _ctr():
    return synthetic_ctr(n=50_000, seed=0).split((0.8, 0.1, 0.1))


def dlrm():
    from edgecompress.models.zoo import model_for_data
    from edgecompress.train import train
    tr, va, te = _ctr()
    torch.manual_seed(0)
    model = model_for_data("dlrm", tr, embedding_dim=16)
    train(model, tr, epochs=4, progress=False)
    return model, tr, va, te


class DCNStyle(torch.nn.Module):
    """Deep & Cross (Wang et al. 2017) as users write it: one table per field, a cross
    network x_{l+1} = x0 * (x_l . w_l) + b_l + x_l beside an MLP, one logit."""

    def __init__(self, vocab, dense_dim, dim=16, cross=3, hidden=(64, 32)):
        super().__init__()
        self.tables = torch.nn.ModuleList(torch.nn.Embedding(v, dim) for v in vocab)
        width = dense_dim + dim * len(vocab)
        self.cross_w = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(width) * 0.01) for _ in range(cross))
        self.cross_b = torch.nn.ParameterList(torch.nn.Parameter(torch.zeros(width)) for _ in range(cross))
        layers, d = [], width
        for h in hidden:
            layers += [torch.nn.Linear(d, h), torch.nn.ReLU()]
            d = h
        self.deep = torch.nn.Sequential(*layers)
        self.out = torch.nn.Linear(width + d, 1)

    def forward(self, dense, sparse):
        x0 = torch.cat([dense] + [t(sparse[:, i]) for i, t in enumerate(self.tables)], dim=1)
        x = x0
        for w, b in zip(self.cross_w, self.cross_b):
            x = x0 * (x @ w).unsqueeze(1) + b + x
        return self.out(torch.cat([x, self.deep(x0)], dim=1)).squeeze(1)


def dcn():
    from edgecompress.train import train
    tr, va, te = _ctr()
    torch.manual_seed(0)
    model = DCNStyle(tr.vocab["sparse"], tr.inputs["dense"].shape[1])
    train(model, tr, epochs=4, progress=False)
    return model.eval(), tr, va, te


def run(name, build, fractions, tmp: Path) -> list[dict]:
    t0 = time.perf_counter()
    model, tr, va, te = build()
    print(f"{name}: built and trained in {time.perf_counter() - t0:.0f} s", flush=True)
    tgt = load_target("local")
    common = dict(target=tgt, data=te, valid_data=va, train_data=tr, formats=FORMATS, progress=False)
    fp32 = ec.compile(model, output=tmp / f"{name}-fp32.ecb", plan=[], **common)
    source = fp32.metrics_before["auc"]
    rows = [{"model": name, "plan": "fp32", "budget": None, "formats": _formats(fp32, source),
             "describe": "fp32"}]
    for frac in fractions:
        budget = fp32.model_bytes // frac
        row = _searched(model, name, f"searched at 1/{frac}", budget, source, tmp, common)
        rows.append(row)
        if "error" in row:      # what each app format fits when it ships alone
            for fmt in FORMATS[1:]:
                rows.append(_searched(model, name, f"1/{frac}, {fmt} only", budget, source, tmp,
                                      dict(common, formats=["numpy", fmt])))
    return rows


def _searched(model, name, label, budget, source, tmp, common) -> dict:
    t0 = time.perf_counter()
    row = {"model": name, "plan": label, "budget": budget}
    try:
        res = ec.compile(model, output=tmp / f"{name}-{budget}.ecb", memory_budget=budget, latency_budget="1s@64",
                         **common)
    except (BudgetError, CompileError) as e:      # recorded: what a user would be told
        row.update(error=f"{type(e).__name__}: {e}")
    else:
        row.update(formats=_formats(res, source), describe=res.search.chosen.state.describe(),
                   warnings=res.warnings, data_roles=res.data_roles)
    row["compile_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps({k: row.get(k) for k in ("model", "plan", "budget", "error")}), flush=True)
    return row


def _formats(res, source_auc) -> dict:
    out = {}
    for fmt, r in res.formats.items():
        auc = (r.get("metrics") or {}).get("auc")
        out[fmt] = {"bytes": r["bytes"], "fits": r["fits"], "auc_test": auc,
                    "delta_auc_vs_source": None if auc is None else auc - source_auc,
                    "max_abs_diff_vs_source": (r.get("vs_source") or {}).get("max_abs_diff")}
    missing = [f for f in FORMATS if f not in out]
    if missing:
        out["_missing"] = {f: [w for w in res.warnings if f in w] for f in missing}
    return out


def table(rows) -> str:
    lines = [f"{'model':6} {'plan':22} {'budget':>10} " + " ".join(f"{f + ' bytes':>17} {'ΔAUC':>8}" for f in FORMATS)]
    for r in rows:
        budget = f"{r['budget']:,}" if r["budget"] else "-"
        if "error" in r:
            lines.append(f"{r['model']:6} {r['plan']:22} {budget:>10}  {r['error'][:140]}...")
            continue
        cells = []
        for f in FORMATS:
            x = r["formats"].get(f)
            cells.append(f"{'-':>17} {'-':>8}" if x is None else
                         f"{x['bytes']:>15,}{'' if x['fits'] else ' !'} {x['delta_auc_vs_source']:>+8.4f}")
        lines.append(f"{r['model']:6} {r['plan']:22} {budget:>10} " + " ".join(cells))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fractions", default="4,16", help="budgets as fractions of the fp32 numpy bundle")
    args = ap.parse_args(argv)
    fractions = [int(x) for x in args.fractions.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in (("dlrm", dlrm), ("dcn", dcn)):
            rows += run(name, build, fractions, Path(tmp))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "schema": "edgecompress.bench.formats/1",
        "conditions": {"machine": platform.machine(), "cores": os.cpu_count(), "loadavg": os.getloadavg(),
                       "torch": torch.__version__, "target": "local", "latency_budget": "1s@64",
                       "rows": "plans chosen on validation rows; every metric on test rows; ΔAUC = format's AUC "
                               "- the source model's AUC on the same test rows"},
        "rows": rows}, indent=1, default=float))
    print(table(rows))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
