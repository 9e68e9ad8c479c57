"""What ``predict()`` adds around a graph run: the input checks and the call itself."""
from __future__ import annotations

import numpy as np

from .timing import timer

def measure_validate(cfg, rng) -> dict:
    """Seconds of ``inputs.validate``: c0 (no inputs) + per dense input (fixed + per value)
    + per ids input (fixed + per field + per value); least squares per input kind."""
    from ..inputs import validate
    c0 = timer(lambda: validate([], {}), cfg)
    dense_pts, ids_pts = [], []
    for batch in (1, 256):
        for width in (4, 64):
            specs = [{"name": "dense", "dtype": "float32", "shape": [None, width], "kind": "dense"}]
            feeds = {"dense": rng.standard_normal((batch, width), dtype=np.float32)}
            dense_pts.append((batch * width, max(timer(lambda: validate(specs, feeds), cfg) - c0, 0.0)))
        for fields in (1, 8, 26):
            specs = [{"name": "sparse", "dtype": "int64", "shape": [None, fields], "kind": "ids",
                      "vocab": [1000] * fields}]
            feeds = {"sparse": rng.integers(0, 1000, size=(batch, fields))}
            ids_pts.append((fields, batch * fields, max(timer(lambda: validate(specs, feeds), cfg) - c0, 0.0)))
    a = np.array([[1.0, v] for v, _ in dense_pts])
    dense_coef = np.maximum(np.linalg.lstsq(a, np.array([t for _, t in dense_pts]), rcond=None)[0], 0.0)
    a = np.array([[1.0, f, v] for f, v, _ in ids_pts])
    ids_coef = np.maximum(np.linalg.lstsq(a, np.array([t for *_, t in ids_pts]), rcond=None)[0], 0.0)
    return {"c0_s": float(c0),
            "dense": {"per_input_s": float(dense_coef[0]), "per_value_s": float(dense_coef[1])},
            "ids": {"per_input_s": float(ids_coef[0]), "per_field_s": float(ids_coef[1]),
                    "per_value_s": float(ids_coef[2])},
            "points": {"dense": [{"values": v, "s": t} for v, t in dense_pts],
                       "ids": [{"fields": f, "values": v, "s": t} for f, v, t in ids_pts]}}


def measure_predict(cfg, rng) -> float:
    """Seconds ``Model.predict`` adds around the input checks and the graph run
    (a one-node in-memory bundle: predict - validate - executor run)."""
    from ..bundle import Bundle
    from ..inputs import validate
    from ..model import Model
    manifest = {"inputs": [{"name": "x", "dtype": "float32", "shape": [None, 4], "kind": "dense"}],
                "graph": {"inputs": ["x"], "outputs": ["y"], "nodes": [{"op": "relu", "args": [{"v": "x"}],
                                                                        "out": "y"}]},
                "params": {}, "constants": {}, "model": {}, "target": {}}
    m = Model(Bundle(path="<calibration>", manifest=manifest, members={}, size=0), backend="numpy")
    feeds = {"x": rng.standard_normal((1, 4), dtype=np.float32)}
    checked = validate(m.input_spec, feeds)
    ex = m._backend.executor
    t_pred = timer(lambda: m.predict(feeds), cfg)
    t_val = timer(lambda: validate(m.input_spec, feeds), cfg)
    t_run = timer(lambda: ex.run(checked), cfg)
    return max(t_pred - t_val - t_run, 0.0)

