"""Artifacts for app runtimes (ExecuTorch .pte, LiteRT .tflite) in the bundle.

    artifacts, warnings = build_artifacts(program, plan, target=tgt,
                                          reference_inputs=ref_in, reference_outputs=ref_out)

Each artifact is exported from the compressed Program (following the plan as
closely as its format allows; ``meta["approximations"]`` lists what it could
not express), then loaded by the same runtime backend a device uses
(edgecompress_runtime.backends) and run on the bundle's reference inputs: its
max abs diff against the host's outputs is recorded in ``meta["parity"]``.

Which formats: ``formats=[...]`` when given, else the target's backends that
are app formats (what the device runs), or $EDGECOMPRESS_FORMATS.

Policy (why: a bundle that silently lacks a format the user asked for is worse
than a failed compile, while the default (the target's formats) should not
fail because one optional toolchain misbehaves):
- toolchain not installed -> a warning naming the extra to install; the other
  formats are still produced (whether or not the format was asked for);
- export error, parity over tolerance, or a metric on the test rows worse than
  the numpy bundle's by more than the plan's tolerance -> ``CompileError`` when
  the format was asked for explicitly (``formats=[...]``), else that format is
  dropped with a warning that carries the error or the measured numbers.

Tolerance: the bundle's own (1e-5 fp32, 1e-2 quantized; a Program that is
fp32 gets the fp32 one), scaled by max(1, max|reference output|) because
XNNPACK and TFLite sum in other orders than torch; an artifact whose recipe
quantizes activations where the plan does not (ExecuTorch, for weight-only
int8 Linear) gets the quantized tolerance. When such an approximate recipe
still misses it and compile measures the artifact on test rows (``gate``),
the metric decides: the artifact ships if it loses no more than the plan's
tolerance against the numpy bundle (its ``parity`` says so), else it is refused.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from edgecompress_runtime.model import split_heads

from ..graph.io import head_logits, output_diff

from edgecompress_runtime.backends import installed

from ..errors import CompileError

FORMATS = ("executorch", "litert")
MEMBERS = {"executorch": "artifacts/model.pte", "litert": "artifacts/model.tflite"}
EXTRA = "pip install 'edgecompress[export]'"
# import names each exporter needs
_REQUIRES = {"executorch": ("executorch", "torchao"),
             "litert": ("litert_torch", "ai_edge_litert", "ai_edge_quantizer")}
TOLERANCE = {"fp32": 1e-5, "quantized": 1e-2}
# default formats when compile() is given none (not "explicit": failures only warn);
# the test suite sets it to "numpy" so only the export tests pay for exports
FORMATS_ENV = "EDGECOMPRESS_FORMATS"


@dataclass
class Artifact:
    format: str            # "executorch" | "litert"
    member: str            # path inside the bundle
    data: bytes
    meta: dict = field(default_factory=dict)


def available_formats() -> dict[str, str | None]:
    """{format: None if its toolchain is installed, else what to install}."""
    out: dict[str, str | None] = {"numpy": None}
    for fmt, modules in _REQUIRES.items():
        missing = [m for m in modules if not installed(m)]
        out[fmt] = None if not missing else f"{EXTRA} ({', '.join(missing)} missing)"
    return out


def _tolerance(program, reference_outputs, meta) -> float:
    quantized = any(p.kind != "fp32" for p in program.params.values())
    inexact = any(not s.get("exact", True) for s in meta.get("recipe", []))
    base = TOLERANCE["quantized" if quantized or inexact else "fp32"]
    if inexact and any(getattr(p, "act", None) for p in program.params.values()):
        # the host reference rounds activations with the plan's scales and the
        # artifact with its own: two independent int8 roundings, twice the error
        base *= 2
    scale = float(np.max(np.abs(reference_outputs))) if np.size(reference_outputs) else 1.0
    return base * max(1.0, scale)


def _backend(fmt: str, data: bytes, meta: dict):
    if fmt == "litert":
        from edgecompress_runtime.backends.litert import LiteRTBackend
        return LiteRTBackend(data=data, meta=meta)
    from edgecompress_runtime.backends.executorch import ExecuTorchBackend
    return ExecuTorchBackend(data=data, meta=meta)


def _feeds(program, inputs: dict) -> dict:
    out = {}
    for name in program.graph["inputs"]:
        a = np.asarray(inputs[name])
        out[name] = np.ascontiguousarray(a.astype(np.int64 if a.dtype.kind in "iu" else np.float32, copy=False))
    return out


def export(fmt, program, plan, target, reference_inputs) -> tuple[bytes, dict]:
    """The ``fmt`` artifact of ``program`` (bytes, meta), not yet checked."""
    sizes = sorted({int(b) for b in (getattr(target, "batch_sizes", None) or (1, 64, 256))})
    if fmt == "executorch":
        from .executorch import export_executorch
        return export_executorch(program, plan, example=reference_inputs, max_batch=max(256, sizes[-1]))
    from .litert import export_litert
    return export_litert(program, plan, example=reference_inputs, batch_sizes=sizes)


def shipped_formats(formats=None, target=None) -> tuple[list[str], bool, list[str]]:
    """(app formats to produce, asked for explicitly?, warnings).

    ``formats``: None = the target's backends that are app formats (what the
    device runs), or the list in $EDGECOMPRESS_FORMATS; else an iterable of
    names ("numpy" is accepted and ignored: the bundle always carries it).
    A format whose toolchain is missing is left out with a warning naming the
    extra to install."""
    explicit = formats is not None
    if formats is None and os.environ.get(FORMATS_ENV):
        formats = [f.strip() for f in os.environ[FORMATS_ENV].split(",") if f.strip()]
    if formats is None:
        formats = [b for b in (getattr(target, "backends", None) or FORMATS) if b in FORMATS]
    wanted = [f for f in dict.fromkeys(formats) if f != "numpy"]
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown:
        raise CompileError(f"unknown format {unknown[0]!r}; known formats: numpy, {', '.join(FORMATS)}")
    have = available_formats()
    warnings = [f"{f} artifact not produced: its toolchain is not installed; {have[f]}"
                for f in wanted if have[f] is not None]
    return [f for f in wanted if have[f] is None], explicit, warnings


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def build_artifacts(program, plan, *, target, reference_inputs: dict, reference_outputs: np.ndarray,
                    formats=None, evaluate=None, source=None, exported=None, gate=None, exclude=(),
                    progress: bool = True) -> tuple[list[Artifact], list[str]]:
    """Export, load, run and check every requested format (see module doc).

    ``formats``: as ``shipped_formats``. ``exported``: {format: (bytes, meta)}
    already exported (compile exports while it checks sizes against the budget).
    ``evaluate(predict_fn) -> dict`` adds the artifact's metrics (test rows); ``source``
    (inputs, the source model's flat outputs) adds ``meta["vs_source"]``.
    ``gate``: (metric, value of the numpy bundle, higher is better, tolerance):
    an artifact whose metric is worse than the bundle's by more than the
    tolerance is refused like a parity failure, with the measured numbers.
    ``exclude``: formats left out (the caller said why). Returns (artifacts, warnings)."""
    wanted, explicit, warnings = shipped_formats(formats, target)
    wanted = [f for f in wanted if f not in exclude]
    exported = dict(exported or {})
    artifacts = []
    want_out = np.asarray(reference_outputs, dtype=np.float32).reshape(-1)
    feeds = _feeds(program, reference_inputs)

    from tqdm.auto import tqdm
    bar = tqdm(wanted, desc="artifacts", leave=False, disable=None if progress else True)
    for fmt in bar:
        bar.set_postfix_str(f"exporting {fmt}")

        def fail(msg):
            if explicit:
                raise CompileError(msg)
            warnings.append(msg + f"; the bundle is written without a {fmt} artifact")

        try:
            done = exported.get(fmt)
            if isinstance(done, Exception):
                raise done
            data, meta = done if done is not None else export(fmt, program, plan, target, reference_inputs)
        except Exception as e:  # noqa: BLE001 - toolchains raise anything; report the first line
            fail(f"{fmt} export failed ({_first_line(e)})")
            continue
        bar.set_postfix_str(f"checking {fmt}")
        try:
            backend = _backend(fmt, data, meta)
            got = np.asarray(backend.run(feeds), dtype=np.float32).reshape(-1)
        except Exception as e:  # noqa: BLE001
            fail(f"the exported {fmt} artifact does not run in its runtime ({_first_line(e)})")
            continue
        tol = _tolerance(program, want_out, meta)
        diff = float(np.max(np.abs(got - want_out))) if got.shape == want_out.shape and got.size else (
            0.0 if got.shape == want_out.shape else float("inf"))
        meta["parity"] = {"max_abs_diff": diff, "tolerance": tol, "ok": diff <= tol, "n": int(want_out.size)}
        approximate = any(not st.get("exact", True) for st in meta.get("recipe", []))
        if not diff <= tol and approximate and gate is not None and evaluate is not None and np.isfinite(diff):
            # a recipe that cannot express the plan exactly (meta["approximations"]) is judged by
            # what it costs on the test rows (the gate below), not by the bug check
            meta["parity"]["judged_by"] = "metric on test rows (approximate recipe)"
        elif not diff <= tol:
            fail(f"{fmt} artifact differs from the host model by {diff:.3g} on the reference inputs "
                 f"(tolerance {tol:.3g}; recipe: {meta.get('precision')})")
            continue
        if source is not None:
            meta["vs_source"] = output_diff(backend.run(_feeds(program, source[0])), source[1], source[0])
        if evaluate is not None:
            bar.set_postfix_str(f"measuring {fmt}")

            def predict(inputs, _b=backend):     # the metric head, as logits
                out = _b.run(_feeds(program, inputs))
                if len(program.outputs) > 1:
                    out = split_heads(out, program.outputs)
                return np.asarray(head_logits(out, program.outputs, program.metric_output),
                                  dtype=np.float32).reshape(-1)
            try:
                meta["metrics"] = evaluate(predict)
            except Exception as e:  # noqa: BLE001 - parity passed; a metric failure is reported, not fatal
                meta["metrics_error"] = _first_line(e)
                warnings.append(f"{fmt} artifact: metrics could not be measured ({_first_line(e)})")
            lost = _metric_loss(meta.get("metrics"), gate)
            if lost is not None:
                metric, value, _, tolerance = gate
                fail(f"{fmt} artifact loses {lost:.4g} {metric} against the numpy bundle on the test rows "
                     f"({meta['metrics'][metric]:.4f} vs {value:.4f}; the plan's tolerance is {tolerance:g}; "
                     f"recipe: {meta.get('precision')})")
                continue
        artifacts.append(Artifact(fmt, MEMBERS[fmt], data, meta))
    bar.close()
    return artifacts, warnings


def _metric_loss(metrics, gate):
    """How much worse than the gate's value the artifact's metric is, when beyond its tolerance."""
    if gate is None or not metrics or gate[0] not in metrics:
        return None
    metric, value, higher, tolerance = gate
    lost = (value - metrics[metric]) if higher else (metrics[metric] - value)
    return lost if lost > tolerance else None
