"""What ``edgecompress compile`` prints: the bundle, the chosen plan (pass, settings),
metrics before and after, each shipped format against the budget, and parity --
as tables, never Python reprs. ``--json`` prints ``CompileResult.summary()`` instead."""
from __future__ import annotations

from .output import table

__all__ = ["print_compile_result", "plan_rows", "formats_rows"]


def print_compile_result(res, con) -> None:
    con.print(f"wrote {res.path} ({res.size_bytes:,} bytes) for {res.target}")
    con.print()
    con.print(table(["#", "pass", "settings"], plan_rows(res.plan) or [["-", "none (fp32)", ""]],
                    title=_plan_title(res), right=("#",)))
    con.print()
    con.print(table(["metric", "before", "after", "change"], _metric_rows(res),
                    title=f"metrics on the test rows ({_rows(res)})", right=("before", "after", "change")))
    head, rows = formats_rows(res)
    con.print()
    con.print(table(head, rows, title="shipped formats (bytes as the device loads them)",
                    right=tuple(head[1:])))
    con.print()
    con.print(_parity_line(res))
    for kind, path in (res.report or {}).items():
        con.print(f"report ({kind}): {path}")


def plan_rows(plan) -> list[list[str]]:
    """One row per pass config: its name and its settings (version and unset fields left out)."""
    rows = []
    for i, cfg in enumerate(plan, 1):
        d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
        name = d.pop("pass", type(cfg).__name__)
        d.pop("version", None)
        rows.append([str(i), name, ", ".join(f"{k}={_short(v)}" for k, v in d.items() if v is not None) or "-"])
    return rows


def formats_rows(res) -> tuple[list[str], list[list[str]]]:
    """Per shipped format: bytes vs the memory budget, the metric on the test rows, difference from the source."""
    mem = res.budgets.get("memory_bytes")
    metric = next((k for k in res.metrics_after if k != "n"), None)
    head = ["format", "bytes", "memory budget", f"{metric} (test rows)", "max |diff| vs source"]
    rows = []
    for fmt, r in res.formats.items():
        rows.append([fmt, f"{r['bytes']:,}" + ("" if r.get("fits", True) else " (over)"),
                     f"{mem:,}" if mem else "none",
                     f"{r['metrics'][metric]:.4f}" if r.get("metrics") and metric in r["metrics"] else "-",
                     f"{r['vs_source']['max_abs_diff']:.2e}" if r.get("vs_source") else "-"])
    return head, rows


def _plan_title(res) -> str:
    search = getattr(res, "search", None)
    chosen = getattr(search, "chosen", None)
    if chosen is None:
        return "plan (given: no search)"
    return (f"plan chosen: {chosen.state.describe()} ({len(search.candidates)} plans searched in "
            f"{search.seconds:.1f} s)")


def _metric_rows(res) -> list[list[str]]:
    rows = []
    for k, after in res.metrics_after.items():
        before = res.metrics_before.get(k)
        if k == "n" or not isinstance(after, (int, float)):
            continue
        change = f"{after - before:+.4f}" if isinstance(before, (int, float)) else "-"
        rows.append([k, f"{before:.4f}" if isinstance(before, (int, float)) else "-", f"{after:.4f}", change])
    return rows


def _rows(res) -> str:
    n = res.metrics_after.get("n")
    return f"{n:,} rows" if isinstance(n, int) else "held-out data"


def _parity_line(res) -> str:
    vs = res.vs_source or {}
    rows = next(iter(vs.values()), {}).get("rows")
    return (f"parity: vs the compressed program {res.parity['max_abs_diff']:.2e} (bug check); vs the source model "
            + ", ".join(f"{b} {v['max_abs_diff']:.2e}" for b, v in vs.items())
            + (f" on {rows:,} rows" if isinstance(rows, int) else ""))


def _short(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in list(v.items())[:4]) + (", ..." if len(v) > 4 else "") + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_short(x) for x in v[:6]) + (", ..." if len(v) > 6 else "") + "]"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)
