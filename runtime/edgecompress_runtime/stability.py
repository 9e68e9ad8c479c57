"""Is a benchmark run worth a number? Distribution-free (order-statistic) confidence
intervals of p50/p90/p99, the spread (CV, IQR, p99/p50) and a verdict per batch size --
``stable``, ``noisy`` or ``unusable`` -- with the reasons, from the timings and from what
the machine did while they were taken (``sysinfo.snapshot`` before and after).

Reasons are ``{"code", "severity", "text"}``; ``severity`` is ``unusable``, ``noisy``
or ``note`` (reported, does not change the verdict). ``code`` is one of ``samples``,
``cv``, ``tail``, ``load``, ``busy``, ``steal``, ``governor``, ``clock``, ``thermal``,
``throttle``, ``emulated``. Environment codes (everything but ``samples``) are worth a
re-run after a cooldown; too few samples is a setting (``--iters`` / ``--min-seconds``).
The thresholds below are module constants, one place to read them.
"""
from __future__ import annotations

import math

import numpy as np

CONFIDENCE = 0.95
MIN_SAMPLES_UNUSABLE = 30      # fewer timed runs: no usable p90
MIN_SAMPLES = 100              # fewer: a tail percentile is mostly one or two runs
CV_NOISY, CV_UNUSABLE = 0.25, 1.0
TAIL_NOISY, TAIL_UNUSABLE = 3.0, 20.0     # p99 / p50
LOAD_NOISY, LOAD_UNUSABLE = 1.0, 2.0      # 1-minute load average per core before the run
BUSY_NOISY = 0.5               # cores' worth of CPU other processes used on our cores during the run
BUSY_UNUSABLE = 0.9            # ... as a share of the cores we run on
STEAL_NOISY = 0.05             # share of our cores' time the hypervisor gave to other guests
TEMP_RISE_NOISY = 5.0          # degrees C over one batch size
CLOCK_CHANGE_NOISY = 0.10      # relative change of the current clock of our cores
ENVIRONMENT = ("cv", "tail", "load", "busy", "steal", "clock", "thermal", "throttle")
_RANK = {"stable": 0, "noisy": 1, "unusable": 2}


def quantile_ci(sorted_ms: np.ndarray, q: float, confidence: float = CONFIDENCE) -> list:
    """[lo, hi] bounding the q-quantile with ``confidence``: order statistics X(l), X(u)
    with P(l <= B < u) >= confidence for B ~ Binomial(n, q) (no assumption on the
    distribution). A side that n samples cannot bound is None."""
    n = int(sorted_ms.size)
    if n == 0:
        return [None, None]
    k = np.arange(n + 1, dtype=np.float64)
    logc = np.concatenate([[0.0], np.cumsum(np.log(n - k[1:] + 1) - np.log(k[1:]))])
    logpmf = logc + k * math.log(q) + (n - k) * math.log1p(-q)
    cdf = np.cumsum(np.exp(logpmf - logpmf.max()))
    cdf /= cdf[-1]
    alpha = (1.0 - confidence) / 2
    # lower: the largest l >= 1 with P(B <= l - 1) <= alpha; upper: the smallest u <= n with P(B >= u) <= alpha
    ls = np.nonzero(cdf[:n] <= alpha)[0]
    lo = float(sorted_ms[int(ls[-1])]) if ls.size else None        # X(l) is index l - 1 = ls[-1]
    us = np.nonzero(1.0 - cdf[:n] <= alpha)[0]                      # P(B >= u) = 1 - F(u - 1)
    hi = float(sorted_ms[int(us[0])]) if us.size else None          # u - 1 = us[0] -> X(u) is index us[0]
    return [lo, hi]


def summarize(times_s) -> dict:
    """p50/p90/p99 with their confidence intervals, mean, min, max, CV, IQR, p99/p50."""
    t = np.sort(np.asarray(times_s, dtype=np.float64) * 1e3)
    n = int(t.size)
    p50, p90, p99 = (float(np.percentile(t, q)) for q in (50, 90, 99))
    q1, q3 = float(np.percentile(t, 25)), float(np.percentile(t, 75))
    mean = float(t.mean())
    return {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "mean_ms": mean, "min_ms": float(t[0]),
            "max_ms": float(t[-1]), "cv": float(t.std() / mean) if mean > 0 else 0.0, "iqr_ms": q3 - q1,
            "p99_p50": p99 / p50 if p50 > 0 else None, "iters": n,
            "ci": {"confidence": CONFIDENCE, "p50_ms": quantile_ci(t, 0.5), "p90_ms": quantile_ci(t, 0.9),
                   "p99_ms": quantile_ci(t, 0.99)}}


def _r(code: str, severity: str, text: str) -> dict:
    return {"code": code, "severity": severity, "text": text}


def _sample_reasons(s: dict) -> list:
    n, out = s["iters"], []
    if n < MIN_SAMPLES_UNUSABLE:
        out.append(_r("samples", "unusable", f"too few samples: {n} timed runs (< {MIN_SAMPLES_UNUSABLE})"))
    elif n < MIN_SAMPLES:
        out.append(_r("samples", "noisy", f"few samples: {n} timed runs (< {MIN_SAMPLES}); raise --iters or "
                                          "--min-seconds"))
    if s["ci"]["p99_ms"][1] is None and n >= MIN_SAMPLES_UNUSABLE:
        out.append(_r("samples", "note", f"p99 has no upper confidence bound with {n} runs (needs >= 367)"))
    if s["cv"] > CV_NOISY:
        sev = "unusable" if s["cv"] > CV_UNUSABLE else "noisy"
        out.append(_r("cv", sev, f"CV {s['cv']:.2f} > {CV_NOISY}"))
    tail = s.get("p99_p50")
    if tail is not None and tail > TAIL_NOISY:
        sev = "unusable" if tail > TAIL_UNUSABLE else "noisy"
        out.append(_r("tail", sev, f"p99/p50 {tail:.1f} > {TAIL_NOISY:.0f}"))
    return out


def _cpu_reasons(env: dict) -> list:
    out = []
    load, cores = env.get("load1"), env.get("cores") or 1
    if load is not None and load / cores > LOAD_NOISY:
        sev = "unusable" if load / cores > LOAD_UNUSABLE else "noisy"
        out.append(_r("load", sev, f"host load: load average {load:.2f} on {cores} cores before the run"))
    busy, ncpu = env.get("others_cores"), env.get("cpus_measured") or 1
    if busy is not None and busy >= BUSY_NOISY:
        sev = "unusable" if busy >= BUSY_UNUSABLE * ncpu else "noisy"
        top = ", ".join(f"{p['comm']} pid {p['pid']} {p['cpu_share'] * 100:.0f}%" for p in env.get("top", [])[:3])
        out.append(_r("busy", sev, f"other processes kept {busy:.1f} of the {ncpu} cores we ran on busy"
                                   + (f" ({top})" if top else "")))
    steal = env.get("steal_share")
    if steal is not None and steal >= STEAL_NOISY:
        out.append(_r("steal", "noisy", f"the hypervisor took {steal * 100:.0f}% of our cores' time (steal)"))
    return out


def _board_reasons(env: dict) -> list:
    out = []
    govs = sorted(set(env.get("governors") or []))
    mhz0, mhz1 = env.get("mhz_before") or {}, env.get("mhz_after") or {}
    changed = [c for c in mhz0 if c in mhz1 and mhz0[c] and abs(mhz1[c] - mhz0[c]) / mhz0[c] > CLOCK_CHANGE_NOISY]
    if govs and govs != ["performance"]:
        out.append(_r("governor", "note", f"frequency governor {', '.join(govs)}, not performance"))
    if changed:
        c = changed[0]
        out.append(_r("clock", "noisy", f"clock of {c} changed {mhz0[c]} -> {mhz1[c]} MHz during the run"
                                        + (f" (governor {', '.join(govs)})" if govs else "")))
    t0, t1 = env.get("temp_before"), env.get("temp_after")
    if t0 is not None and t1 is not None and t1 - t0 > TEMP_RISE_NOISY:
        out.append(_r("thermal", "noisy", f"temperature rose {t0:.1f} -> {t1:.1f} C during the run"))
    if env.get("throttle_events"):
        out.append(_r("throttle", "noisy", f"thermal throttling: {env['throttle_events']} throttle events "
                                           "during the run"))
    if env.get("cooling_active"):
        out.append(_r("throttle", "noisy", "thermal throttling: cooling device(s) active: "
                                           + ", ".join(env["cooling_active"])))
    if env.get("emulated"):
        out.append(_r("emulated", "note", "emulated (qemu-user): timings describe the emulator"))
    return out


def judge(stats: dict, env: dict | None = None) -> dict:
    """``{"verdict", "reasons"}`` for one batch size's ``summarize`` output and environment."""
    reasons = _sample_reasons(stats) + (_cpu_reasons(env) + _board_reasons(env) if env else [])
    verdict = "stable"
    for r in reasons:
        if r["severity"] in _RANK and _RANK[r["severity"]] > _RANK[verdict]:
            verdict = r["severity"]
    return {"verdict": verdict, "reasons": reasons}


def overall(rows: list[dict]) -> dict:
    """The worst verdict over the batch sizes, each reason prefixed with its batch size;
    ``rerun_worthy`` when a non-stable verdict comes (also) from the environment."""
    verdict, reasons = "stable", []
    for r in rows:
        if _RANK[r["verdict"]] > _RANK[verdict]:
            verdict = r["verdict"]
        reasons += [dict(x, batch=r["batch"]) for x in r["reasons"]]
    worthy = verdict != "stable" and any(x["code"] in ENVIRONMENT and x["severity"] != "note" for x in reasons)
    return {"verdict": verdict, "reasons": reasons, "rerun_worthy": worthy}


def worse(a: str, b: str) -> str:
    return a if _RANK.get(a, 0) >= _RANK.get(b, 0) else b


def rank(verdict: str) -> int:
    return _RANK.get(verdict, 2)
