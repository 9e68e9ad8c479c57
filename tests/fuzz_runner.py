"""Run bundle mutants (fuzz_mutants.py) through the runtime in child processes.

Each mutant goes through ``load -> predict(reference inputs) -> check_parity -> info`` in a child
(many per child, for speed) under RLIMIT_AS (the child's address space after its imports plus
``MEMORY_LIMIT``) and a per-mutant time limit (SIGALRM in the child; the parent kills a child
that stays silent past it plus a grace). Outcomes: ``refused`` (one of our errors, one short
line), ``loaded`` (it ran; ``parity_off`` when an edit changed the outputs), and the failures
``escape`` (any other exception), ``bad_message`` (ours, but multi-line or long), ``memory``
(MemoryError: the limit was hit), ``hang`` and ``crash`` (the child died). Each mutant's peak
RSS above the RSS it started at is measured by resetting the kernel's high-water mark
(/proc/self/clear_refs) before it.

    python tests/fuzz_runner.py --child     # internal: mutants as JSON on stdin, results as JSON lines
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = ("BundleError", "BackendError", "InputError")
FAILURES = ("escape", "bad_message", "memory", "hang", "crash")
OUTCOMES = ("refused", "loaded", "parity_off") + FAILURES
MEMORY_LIMIT = 1 << 30          # extra address space per child: the runtime's MAX_PEAK_BYTES
TIME_LIMIT = 20.0               # seconds per mutant
GRACE = 10.0
MAX_MESSAGE = 600


class _Hang(BaseException):
    pass


def _alarm(signum, frame):
    raise _Hang()


def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> int:
    """Reset the peak RSS (VmHWM; Linux: clear_refs 5) and return the current RSS in kB."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _status_kb("VmRSS")


def _peak_extra_mb(start_kb: int) -> float:
    """Peak RSS above ``start_kb`` since the last reset."""
    return max(0, _status_kb("VmHWM") - start_kb) / 1024


def _one(item: dict) -> dict:
    """One mutant through load -> predict -> parity -> info, in this (child) process."""
    from edgecompress_runtime import cli, load
    from edgecompress_runtime.signing import ENV_VAR
    os.environ[ENV_VAR] = item["trust"]
    steps = []
    try:
        m = load(item["path"])
        steps.append("load")
        inputs, _ = m.reference()
        m.predict(inputs)
        steps.append("predict")
        parity = m.check_parity()
        steps.append("parity")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            rc = cli.main(["info", item["path"]])
        if rc != 0:
            return {"outcome": "escape", "detail": f"info exited {rc} after a clean load", "steps": steps}
        return {"outcome": "loaded" if parity["ok"] else "parity_off", "steps": steps + ["info"],
                "detail": m.backend}
    except _Hang:
        return {"outcome": "hang", "detail": f"over {TIME_LIMIT:g} s", "steps": steps}
    except MemoryError as e:
        return {"outcome": "memory", "detail": str(e)[:200], "steps": steps}
    except Exception as e:  # noqa: BLE001 - classifying every exception is the point
        name, text = type(e).__name__, str(e)
        if name in OURS:
            ok = "\n" not in text and len(text) <= MAX_MESSAGE
            return {"outcome": "refused" if ok else "bad_message", "error": name, "detail": text[:300],
                    "steps": steps}
        return {"outcome": "escape", "error": name, "detail": f"{name}: {text[:300]}", "steps": steps}


def child() -> None:
    """Read mutants from stdin, answer with JSON lines: a "start" line, then the result."""
    items = json.loads(sys.stdin.read())
    import importlib

    # imports before the limit (they are not a mutant's memory), artifact runtimes included
    from edgecompress_runtime import backends
    importlib.import_module("edgecompress_runtime.cli")
    for name in backends.available():
        with contextlib.suppress(Exception):
            if name == "litert":
                importlib.import_module("ai_edge_litert.interpreter")
            elif name == "executorch":
                importlib.import_module("executorch.runtime").Runtime.get()
    resource.setrlimit(resource.RLIMIT_AS, (_vm_bytes() + MEMORY_LIMIT, resource.RLIM_INFINITY))
    signal.signal(signal.SIGALRM, _alarm)
    out = sys.stdout
    for item in items:
        out.write(json.dumps({"event": "start", "i": item["i"]}) + "\n")
        out.flush()
        t0, rss0 = time.perf_counter(), _reset_peak()
        signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
        try:
            res = _one(item)
        except _Hang:
            res = {"outcome": "hang", "detail": f"over {TIME_LIMIT:g} s", "steps": []}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        res.update(event="done", i=item["i"], seconds=round(time.perf_counter() - t0, 4),
                   peak_extra_mb=round(_peak_extra_mb(rss0), 1))
        out.write(json.dumps(res) + "\n")
        out.flush()


def _drive(batch: list[dict], env: dict) -> tuple[dict, list]:
    """Run ``batch`` in one child; returns (results by index, items not reached)."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    proc.stdin.write(json.dumps(batch))
    proc.stdin.close()
    results, current, last = {}, None, time.monotonic()
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            msg = json.loads(line)
            if msg["event"] == "start":
                current, last = msg["i"], time.monotonic()
            else:
                results[msg["i"]], current = msg, None
        elif time.monotonic() - last > TIME_LIMIT + GRACE + (60 if current is None else 0):
            proc.kill()
            if current is not None:
                results[current] = {"outcome": "hang", "detail": "child silent past the time limit"}
            break
    rc = proc.wait()
    if current is not None and current not in results:
        results[current] = {"outcome": "crash", "detail": f"child exited {rc}"}
    return results, [it for it in batch if it["i"] not in results]


def run(items: list[dict], workers: int = 2, per_child: int = 60, env: dict | None = None) -> list[dict]:
    """Every mutant's result (the item's fields + outcome, detail, seconds, peak_extra_mb)."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "runtime"), str(ROOT)] + [env.get("PYTHONPATH", "")])
    env.setdefault("OPENBLAS_NUM_THREADS", "1")

    def worker(batch):
        done = {}
        while batch:
            got, batch = _drive(batch, env)
            done.update(got)
        return done

    chunks = [items[k:k + per_child] for k in range(0, len(items), per_child)]
    results = {}
    with ThreadPoolExecutor(workers) as pool:
        for got in pool.map(worker, chunks):
            results.update(got)
    return [{**it, **results[it["i"]]} for it in items]


def table(results: list[dict]) -> dict:
    """class -> outcome -> count."""
    out: dict = {}
    for r in results:
        row = out.setdefault(r["cls"], {o: 0 for o in OUTCOMES})
        row[r["outcome"]] = row.get(r["outcome"], 0) + 1
    return out


def bomb_cost(bundle, workdir, signed_store: bool) -> dict:
    """Refusal time and extra peak RSS of one zip bomb, in a fresh child (unsigned bundle; with
    ``signed_store`` the device has a trust store, so signatures are required)."""
    code = (
        "import json, sys, time\n"
        "import numpy, edgecompress_runtime as rt\n"
        "from edgecompress_runtime import BundleError\n"
        "def kb(f):\n    return int(next(l for l in open('/proc/self/status') if l.startswith(f)).split()[1])\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "r0 = kb('VmRSS:')\n"
        "t = time.perf_counter()\n"
        "try:\n    rt.load(sys.argv[1]); out = 'loaded'\n"
        "except BundleError as e:\n    out = 'refused: ' + str(e)[:200]\n"
        "dt = time.perf_counter() - t\n"
        "r1 = kb('VmHWM:')\n"
        "print(json.dumps({'outcome': out, 'seconds': dt, 'extra_mb': (r1 - r0) / 1024}))\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "runtime")
    from edgecompress_runtime.signing import ENV_VAR
    env[ENV_VAR] = str(Path(workdir) / ("trust" if signed_store else "no-trust-store"))
    got = subprocess.run([sys.executable, "-c", code, str(bundle)], env=env, capture_output=True, text=True,
                         timeout=120)
    return {**json.loads(got.stdout.strip().splitlines()[-1]), "signed_store": signed_store}


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        child()
