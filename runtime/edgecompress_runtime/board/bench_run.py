"""One benchmark run on the board, in one process: board facts and temperatures
before, then exactly what ``edgecompress-runtime bench ... --json FILE`` does (its
CLI entry point; its table goes to stderr), then temperatures after.

    python -m edgecompress_runtime.board.bench_run '{"bundle": ..., "batch": "1,64", "warmup": 20,
        "iters": 200, "backend": "auto", "json": "/tmp/out.json", "min_seconds": 0, "cores": null,
        "facts": true, "profile": {"batch": 256, "runs": 100}}'

Prints one JSON line: ``{"rc", "result" (the bench JSON or null), "before", "after"}``.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys

from .facts import facts


def run(a: dict) -> dict:
    from ..cli import main as runtime_main
    before = facts(full=bool(a.get("facts")))
    argv = ["bench", a["bundle"], "--batch", str(a["batch"]), "--warmup", str(a["warmup"]), "--iters",
            str(a["iters"]), "--backend", a.get("backend", "auto"), "--json", a["json"]]
    argv += ["--min-seconds", str(float(a.get("min_seconds") or 0.0))]
    if a.get("cores"):
        argv += ["--cores", str(a["cores"])]
    prof = a.get("profile")
    if prof:                                          # the op profile (profile.py), in the same JSON
        argv += ["--profile", "--profile-runs", str(int(prof.get("runs") or 100))]
        if prof.get("batch"):
            argv += ["--profile-batch", str(int(prof["batch"]))]
    with contextlib.redirect_stdout(sys.stderr):     # stdout carries our one JSON line only
        rc = runtime_main(argv)
    result = None
    if os.path.exists(a["json"]):
        with open(a["json"]) as f:
            result = json.load(f)
        os.unlink(a["json"])
    return {"rc": rc, "result": result, "before": before, "after": facts(full=False)}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print(json.dumps(run(json.loads(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
