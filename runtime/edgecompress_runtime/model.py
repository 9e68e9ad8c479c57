"""A loaded bundle: validated predict(), ranking, and parity against the host."""
from __future__ import annotations

import numpy as np

from . import backends
from .bundle import Bundle, read_bundle
from .errors import BackendError, BundleError, InputError, RuntimeErrorBase
from .inputs import validate


class Model:
    """What ``edgecompress_runtime.load`` returns.

    ``predict({...})`` returns the model's output as float32 [B] (a [B, k] head
    keeps its shape); a multi-head model returns {head name: array}.
    ``outputs`` says per head whether it is a logit or a probability
    (``predict_proba`` applies the sigmoid to logit heads only).
    ``stats["oov"]`` counts ids mapped to declared OOV rows, per field.
    ``backend`` names the backend that runs; ``backend_reason`` says why (for "auto":
    measured fastest at the bundle's latency batch, or the target's order; see backends/).
    """

    def __init__(self, bundle: Bundle, backend: str = "auto", max_batch: int | None = None):
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.input_spec = self.manifest["inputs"]
        self._backend, self.backend_reason = backends.open_backend(backend, bundle)
        self.backend = self._backend.name
        self.stats = {"oov": {}, "runs": 0}       # runs: backend invocations (predict calls that ran)
        from .retrieval import section
        self.retrieval = section(self.manifest)   # None, or how this bundle ranks every item in one call
        self.bounds = _bounds(self._backend, bundle, max_batch)
        self.max_batch = self.bounds.max_batch      # predict() refuses more rows (see bounds.py)

    @property
    def input_names(self) -> list[str]:
        return [s["name"] for s in self.input_spec]

    @property
    def outputs(self) -> list[dict]:
        """[{"name", "form": "logit" | "probability"}] per head, in graph order."""
        heads = (self.manifest.get("model") or {}).get("outputs")
        if isinstance(heads, list) and heads:
            return heads
        return [{"name": "output", "form": (self.manifest.get("model") or {}).get("output", "logit")}]

    def predict(self, inputs: dict):
        rows = _rows(inputs)
        if rows > self.max_batch:
            raise InputError(f"a batch of {rows} rows is above this model's max_batch of {self.max_batch} "
                             f"({self.bounds.source}); split it, or load(..., max_batch=) within the limits")
        feeds = validate(self.input_spec, inputs, self.stats["oov"])
        heads = self.outputs
        try:
            self.stats["runs"] += 1
            out = self._backend.run(feeds)
            if not isinstance(out, (tuple, list)) and len(heads) > 1:
                out = split_heads(out, heads)        # app formats return the heads side by side
        except (RuntimeErrorBase, MemoryError):
            raise
        except Exception as e:  # noqa: BLE001 - a backend or a hostile graph fails in its own ways
            kind = BundleError if self.backend == "numpy" else BackendError
            text = " ".join(str(e).split())[:160]
            raise kind(f"the {self.backend} backend failed on this batch ({type(e).__name__}: {text})") from None
        if not isinstance(out, (tuple, list)):
            return _head(out)
        if len(heads) != len(out):
            raise BundleError(f"the bundle names {len(heads)} output(s) but its graph returned {len(out)}")
        if len(out) == 1:
            return _head(out[0])
        return {h["name"]: _head(o) for h, o in zip(heads, out)}

    def predict_flat(self, inputs: dict) -> np.ndarray:
        """Every head's columns side by side, flattened: the layout of the stored reference outputs."""
        got = self.predict(inputs)
        if isinstance(got, dict):
            n = len(next(iter(inputs.values())))
            got = np.concatenate([np.asarray(got[h["name"]]).reshape(n, -1) for h in self.outputs], axis=1)
        return np.asarray(got, dtype=np.float32).reshape(-1)

    def predict_proba(self, inputs: dict):
        out = self.predict(inputs)
        heads = self.outputs
        if isinstance(out, dict):
            return {h["name"]: _proba(out[h["name"]], h.get("form")) for h in heads}
        return _proba(out, heads[0].get("form"))

    def topk(self, inputs: dict, candidates=None, k: int = 10, exclude=None):
        """Rank items for a query. Returns (positions into the candidates, scores), best first.

        A retrieval bundle (``self.retrieval``; compile(..., towers=...)): ``inputs`` holds the user
        inputs only; the user tower runs once and one matrix product scores every item.
        ``candidates``: None (every item: positions are item ids), item ids, or {"item_id": ids}.
        B query rows give [B, k] arrays, one row gives [k]; ``exclude``: positions to drop,
        shared or one array per query row (e.g. items already seen).

        A pairwise bundle: ``inputs`` holds the query's features (batch 1); ``candidates`` holds N
        rows for the inputs that vary per candidate (e.g. ``{"item_id": ids}``), other inputs are
        repeated; ``exclude``: candidate positions to drop."""
        from .retrieval import check_k, rank, retrieval_topk
        k = check_k(k)
        if self.retrieval is not None:
            return retrieval_topk(self, self.retrieval, inputs, candidates, k, exclude)
        if not candidates or not isinstance(candidates, dict):
            raise InputError("topk() on a pairwise bundle needs candidate inputs, e.g. {'item_id': ids} "
                             "(only a retrieval bundle, compiled with towers=, ranks every item by itself)")
        n = {len(np.asarray(v)) for v in candidates.values()}
        if len(n) != 1:
            raise InputError(f"candidate inputs have different lengths: {sorted(n)}")
        n = n.pop()
        if n == 0:
            raise InputError("topk() candidates is empty")
        feeds = {}
        for name in self.input_names:
            if name in candidates:
                feeds[name] = np.asarray(candidates[name])
            elif name in inputs:
                q = np.asarray(inputs[name])
                if q.shape[0] != 1:
                    raise InputError(f"topk() query input {name!r} must have batch size 1, got {q.shape[0]}")
                feeds[name] = np.repeat(q, n, axis=0)
            else:
                raise InputError(f"topk() is missing input {name!r} (give it in inputs or candidates)")
        scores = np.concatenate([self.predict({name: v[s:s + self.max_batch] for name, v in feeds.items()})
                                 for s in range(0, n, self.max_batch)])
        top, top_scores = rank(scores.reshape(1, n), k, exclude)
        return top[0], top_scores[0]

    def reference(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        ref = self.manifest["reference"]
        inputs = {k: self.bundle.array(m) for k, m in ref["inputs"].items()}
        return inputs, self.bundle.array(ref["outputs"])

    def check_parity(self) -> dict:
        """Max abs diff between this backend and the host's stored outputs."""
        inputs, want = self.reference()
        got = self.predict_flat(inputs)
        if got.size != want.size:
            raise BundleError(f"{self.bundle.path}: the reference outputs hold {want.size} values, the model gives "
                              f"{got.size} for the reference inputs (corrupted or tampered)")
        diff = float(np.max(np.abs(got - want.reshape(-1)))) if want.size else 0.0
        tol = float(self.manifest["reference"].get("tolerance", 1e-2))
        # an app artifact carries the tolerance its export was checked with
        art = (self.manifest.get("artifacts") or {}).get(self.backend)
        if isinstance(art, dict) and "tolerance" in (art.get("parity") or {}):
            tol = float(art["parity"]["tolerance"])
        return {"backend": self.backend, "max_abs_diff": diff, "tolerance": tol, "ok": diff <= tol,
                "n": int(want.size)}


def _rows(inputs) -> int:
    """Rows of the first input, read without converting it (0 when it has none)."""
    if not isinstance(inputs, dict) or not inputs:
        return 0
    v = next(iter(inputs.values()))
    shape = getattr(v, "shape", None)
    if isinstance(shape, tuple):
        return int(shape[0]) if shape else 0
    return len(v) if isinstance(v, (list, tuple)) else 0


def _bounds(backend, bundle: Bundle, max_batch):
    """The graph's cost at its maximum batch, checked against the limits (bounds.py). An app
    artifact's own runtime runs it, not the graph: its maximum batch is only checked for type."""
    from .bounds import DEFAULT_MAX_BATCH, ENV_MAX_FLOPS, ENV_MAX_PEAK_BYTES, MAX_FLOPS, MAX_PEAK_BYTES, \
        Bounds, bound, limit
    if max_batch is not None and (type(max_batch) is not int or max_batch < 1):
        raise InputError(f"max_batch must be a positive integer, got {str(max_batch)[:40]!r}")
    declared = bundle.manifest.get("max_batch")
    source = "caller" if max_batch is not None else "manifest" if declared is not None else "default"
    chosen = max_batch if max_batch is not None else declared
    executor = getattr(backend, "executor", None)
    if executor is None:
        return Bounds(chosen or DEFAULT_MAX_BATCH, source, 0, 0, limit(ENV_MAX_PEAK_BYTES, MAX_PEAK_BYTES),
                      limit(ENV_MAX_FLOPS, MAX_FLOPS))
    return bound(executor, bundle.manifest["inputs"], bundle.path, chosen, source)


def _head(out) -> np.ndarray:
    """One output as float32: [B] for [B] and [B, 1] heads, else its own shape."""
    a = np.asarray(out, dtype=np.float32)
    return a.reshape(-1) if a.ndim <= 1 or a.size == a.shape[0] else a


def split_heads(out, heads) -> list:
    a = np.asarray(out)
    widths = [int(h.get("width", 1)) for h in heads]
    a = a.reshape(-1, sum(widths))
    cuts = np.cumsum(widths)[:-1]
    return [part.reshape(-1) if w == 1 else part for part, w in zip(np.split(a, cuts, axis=1), widths)]


def _proba(x, form) -> np.ndarray:
    if form == "probability":
        return x
    return (1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))).astype(np.float32)


def load(path, backend: str = "auto", max_batch: int | None = None) -> Model:
    """Open a bundle, verify every member's hash, apply this device's signing
    policy (see signing.py: with trusted keys installed, only bundles signed by
    one of them load), and prepare ``backend`` ("auto": among the backends installed
    here that the bundle carries, the one measured fastest at the bundle's latency
    batch when its manifest carries measured estimates, else the target's preferred
    one; ``model.backend_reason`` says which rule applied). ``max_batch``: the largest
    batch predict() takes (default: the manifest's, else the largest within the limits
    of bounds.py, at most 65536); a graph that cannot run it within those limits is refused."""
    from .allocator import tune
    from .signing import load_trusted_keys
    tune()                      # keep freed run memory in the process (see allocator.py)
    # the signing policy is applied before any member is inflated (read_bundle)
    bundle = read_bundle(path, trusted=load_trusted_keys())
    signature = bundle.verification
    model = Model(bundle, backend=backend, max_batch=max_batch)
    model.signature = signature
    return model
