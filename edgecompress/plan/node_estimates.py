"""The latency model's estimate per node of a compiled bundle, for the on-device op profile
(``bench --profile``): what the model said each op and layer would cost, next to what the
device measured, so calibration error has a place to look.

The bundle's own graph and stored params are the program (runtime ``Param`` objects carry
what ``TableLayout`` and ``linear_act`` read); its reference inputs are the example the
shape profile runs. The model is ``LatencyModel`` for the given target profile, with the
target's stored latency table when there is one (as compile uses), else its coefficients.
"""
from __future__ import annotations

from edgecompress_runtime.profile import INPUT_CHECKS, layer_of

from ..graph.program import Program, StoredParam
from .latency import LatencyModel
from .shape_profile import shape_profile


def bundle_program(path) -> Program:
    """The program a bundle runs (graph, params, constants, reference inputs as the example)."""
    from edgecompress_runtime import load
    from edgecompress_runtime.inputs import validate
    model = load(path, backend="numpy")
    man = model.manifest
    params = {k: StoredParam(p.kind, p.arrays, tuple(p.shape), p.bits, act=p.act)
              for k, p in model._backend.params.items()}
    consts = {k: model.bundle.array(m) for k, m in (man.get("constants") or {}).items()}
    ref, _ = model.reference()
    return Program(graph=man["graph"], params=params, constants=consts, roles={},
                   input_names=[s["name"] for s in man["inputs"]], example=validate(man["inputs"], ref, {}))


def node_estimates(path, batch: int, target=None, table="auto") -> dict:
    """``{"source", "target", "batch", "total_ms", "nodes": {out: ms}, "by_op": {op: ms},
    "by_layer": {layer: ms}}``: the latency model's estimate of every node of the bundle at
    ``batch``. ``target``: a Target or profile name (default: the bundle's); ``table``: a
    LatencyTable, None (coefficients) or "auto" (the target's stored table, if any). Rows the
    model prices outside the nodes (input checks, kept memory, the graph fit) are listed under
    their own names, the profile's ``(input checks)`` among them."""
    from ..targets import Target, load_target
    from .latency_table import load_for_target
    program = bundle_program(path)
    if target is None:
        from edgecompress_runtime.bundle import read_bundle
        target = (read_bundle(path).manifest.get("target") or {}).get("name") or "local"
    tgt = target if isinstance(target, Target) else load_target(target)
    if table == "auto":
        table = load_for_target(tgt)
    lm = LatencyModel(tgt, shape_profile(program), table=table)
    est = lm.estimate(program, int(batch))
    if "by_node" in est:                         # a measured table: per node as it summed them
        per_node = {out: s for out, _op, s in est["by_node"]}
    else:                                        # the profile's coefficients
        per_node = {n["out"]: lm.costs.node_seconds(program, n, int(batch)) for n in program.graph["nodes"]}
    by_op: dict = {}
    by_layer: dict = {}
    for n in program.graph["nodes"]:
        s = per_node.get(n["out"], 0.0) * 1e3
        by_op[n["op"]] = by_op.get(n["op"], 0.0) + s
        by_layer[layer_of(n)] = by_layer.get(layer_of(n), 0.0) + s
    for name, s in est["by_op"].items():         # what the model prices outside the nodes
        if name not in by_op:
            key = INPUT_CHECKS if name == "input checks" else f"({name})"
            by_op[key] = by_layer[key] = s * 1e3
    return {"source": f"{est.get('source', 'latency model')}, target {tgt.name}", "target": tgt.name,
            "measured": bool(lm.measured), "batch": int(batch), "total_ms": est["total_s"] * 1e3,
            "nodes": {k: v * 1e3 for k, v in per_node.items()},
            "by_op": by_op, "by_layer": by_layer}
