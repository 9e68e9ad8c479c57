"""Per op type: the fixed and per-value cost through the executor, alone and in a mixed graph."""
from __future__ import annotations

import time

import numpy as np

from .. import ops
from ..backends.numpy_graph import GraphExecutor
from .timing import linear_param, table_param, timer

# op -> (builder of the node's args given the input value name, input shape kind)
TWO_D = "2d"
THREE_D = "3d"
OP_ARGS = {
    "identity": (lambda x: [x], TWO_D),
    "relu": (lambda x: [x], TWO_D),
    "sigmoid": (lambda x: [x], TWO_D),
    "tanh": (lambda x: [x], TWO_D),
    "add": (lambda x: [x, x], TWO_D),
    "mul": (lambda x: [x, x], TWO_D),
    "sub": (lambda x: [x, x], TWO_D),
    "div": (lambda x: [x, 2.0], TWO_D),
    "clamp": (lambda x: [x, 0.0, 1.0], TWO_D),
    "exp": (lambda x: [x], TWO_D),
    "slice": (lambda x: [x, 1, 0, 4, 1], TWO_D),
    "select": (lambda x: [x, 1, 0], TWO_D),
    "cat": (lambda x: [[x, x], 1], TWO_D),
    "stack": (lambda x: [[x, x, x, x], 1], TWO_D),
    "reshape": (lambda x: [x, [-1]], TWO_D),
    "flatten": (lambda x: [x, 1, -1], THREE_D),
    "unsqueeze": (lambda x: [x, 1], TWO_D),
    "squeeze": (lambda x: [x, -1], TWO_D),
    "transpose": (lambda x: [x, 1, 2], THREE_D),
    "permute": (lambda x: [x, [0, 2, 1]], THREE_D),
    "sum": (lambda x: [x, [1], False], TWO_D),
    "mean": (lambda x: [x, [1], False], TWO_D),
    "softmax": (lambda x: [x, -1], TWO_D),
    "index": (None, THREE_D),        # built with constant index arrays, as the DLRM interaction uses it
    "embedding_bag": (None, None),    # fixed cost of the bag reduction on top of the gather
}


def node_graph(op: str, count: int, x_name: str = "x"):
    build, _ = OP_ARGS[op]
    nodes = []
    for i in range(count):
        if op == "index":
            args = [{"v": x_name}, [None, {"c": "ia"}, {"c": "ib"}]]
        else:
            args = build({"v": x_name})
        nodes.append({"op": op, "args": args, "out": f"o{i}"})
    return {"inputs": [x_name], "outputs": [f"o{count - 1}"], "nodes": nodes}


def op_input(kind: str, values: int, rng) -> np.ndarray:
    if kind == THREE_D:
        b = max(1, values // 64)
        return rng.standard_normal((b, 8, 8), dtype=np.float32)
    b = max(1, values // 16)
    return rng.standard_normal((b, 16), dtype=np.float32)


def measure_ops(cfg, rng, quick: bool) -> dict:
    """Per op type: ``fixed_s`` through GraphExecutor (a graph of many such nodes on a
    tiny input: dispatch + the op's own overhead) and ``per_value_s`` from calling the
    op on a large input, its output freed at once (the cost of memory a run keeps is
    measured separately, see ``measure_memory``)."""
    nodes = 20
    big = 4096 if quick else 16384
    res = {}
    tri = np.triu_indices(8, 1)
    consts = {"ia": tri[0].astype(np.int64), "ib": tri[1].astype(np.int64)}
    for op, (build, kind) in OP_ARGS.items():
        if op == "embedding_bag":
            continue
        small = op_input(kind, 16 if kind == TWO_D else 64, rng)
        ex = GraphExecutor(node_graph(op, nodes), {}, consts)
        t_small = timer(lambda: ex.run({"x": small}), cfg) / nodes
        out_small = np.asarray(ex.run({"x": small}, keep=set())["o0"]).size
        x = op_input(kind, big, rng)
        if op == "index":
            fn, args = ops.OPS[op], [x, [None, consts["ia"], consts["ib"]]]
        else:
            fn, args = ops.OPS[op], build(x)
        t_big = timer(lambda: fn(*args), cfg)
        out_big = np.asarray(fn(*args)).size
        # the small point's op work, measured the same way, so the slope is not skewed by dispatch
        if op == "index":
            sargs = [small, [None, consts["ia"], consts["ib"]]]
        else:
            sargs = build(small)
        t_small_fn = timer(lambda: fn(*sargs), cfg)
        per_value = max(0.0, (t_big - t_small_fn) / max(out_big - out_small, 1))
        fixed = max(t_small - per_value * out_small, 0.0)
        res[op] = {"fixed_s": fixed, "per_value_s": per_value, "points": [
            {"values": int(out_small), "s": t_small, "via": "executor"},
            {"values": int(out_small), "s": t_small_fn, "via": "op"},
            {"values": int(out_big), "s": t_big, "via": "op"}]}
    # embedding_bag with bags of one id: the bag reduction on top of Param.gather
    p = table_param(rng, 64, 16, 32)
    for n in (1, 1024):
        ids = rng.integers(0, 64, size=(n, 1))
        t_bag = timer(lambda: ops.embedding_bag(p, ids, 0, None), cfg)
        t_g = timer(lambda: p.gather(ids), cfg)
        res.setdefault("embedding_bag", {"points": []})["points"].append(
            {"values": n * 16, "s": max(t_bag - t_g, 0.0)})
    pts = res["embedding_bag"]["points"]
    slope = max(0.0, (pts[1]["s"] - pts[0]["s"]) / (pts[1]["values"] - pts[0]["values"]))
    res["embedding_bag"].update(fixed_s=max(pts[0]["s"] - slope * pts[0]["values"], 0.0), per_value_s=slope)
    return res


def measure_mixed(cfg, rng, ops_table: dict, dispatch_s: float, rounds: int = 3) -> dict:
    """Fixed cost per node of each op type inside a mixed graph (cheap ops, Linear,
    embedding bags and a batched matmul in turn, ``rounds`` times), each node timed on
    its own within the run, as a model's graph executes: code and data are less hot
    than in a loop of one repeated op, which matters under emulation (qemu-user) and
    on small cores. Returns the per-op medians and ``context_s``: the median extra per
    node over the same call in a tight loop, which the host adds to gathers, Linear
    and matmuls (their grids are measured in tight loops)."""
    cheap = [op for op in OP_ARGS if op not in ("embedding_bag", "identity")]
    tri = np.triu_indices(8, 1)
    consts = {"ia": tri[0].astype(np.int64), "ib": tri[1].astype(np.int64)}
    w, bias = linear_param(rng, 16, 32, "fp32")
    table = table_param(rng, 1000, 16, 32)
    params = {"w": w, "t": table}
    consts["b"] = bias
    x3 = op_input(THREE_D, 64, rng)
    feeds = {"x": op_input(TWO_D, 16, rng), "x3": x3, "x3t": x3.transpose(0, 2, 1),
             "ids": rng.integers(0, 1000, size=(4, 1))}
    heavy = {"linear": [{"v": "x"}, {"p": "w"}, {"c": "b"}], "embedding_bag": [{"p": "t"}, {"v": "ids"}, 0, None],
             "bmm": [{"v": "x3"}, {"v": "x3t"}]}
    nodes = []
    for r in range(rounds):
        for op in cheap + list(heavy):
            if op in heavy:
                args = heavy[op]
            else:
                build, kind = OP_ARGS[op]
                x = {"v": "x3" if kind == THREE_D else "x"}
                args = [x, [None, {"c": "ia"}, {"c": "ib"}]] if op == "index" else build(x)
            nodes.append({"op": op, "args": args, "out": f"{op}{r}"})
    graph = {"inputs": list(feeds), "outputs": [nodes[-1]["out"]], "nodes": nodes}
    ex = GraphExecutor(graph, params, consts)
    steps = ex._steps
    clock = time.perf_counter
    t = [clock() for _ in range(64)]
    clock_s = float(np.median(np.diff(t)))
    samples, start = [], clock()
    while len(samples) < 15 or (clock() - start < cfg["min_total_s"] * 4 and len(samples) < 400):
        env = dict(feeds)
        row = []
        for fn, resolvers, out in steps:
            t0 = clock()
            env[out] = fn(*[r(env) for r in resolvers])
            row.append(clock() - t0)
        samples.append(row)
        if clock() - start > cfg["max_total_s"] * 10:
            break
    med = np.median(np.asarray(samples), axis=0) - clock_s
    per_op: dict[str, list] = {}
    for n, v in zip(nodes, med):
        per_op.setdefault(n["op"], []).append(float(v))
    fixed = {op: max(float(np.median(v)), 0.0) for op, v in per_op.items()}
    # the same calls in tight loops (+ the executor's dispatch, included in the mixed times)
    tight = {op: ops_table[op]["fixed_s"] for op in cheap if op in ops_table}
    tight["linear"] = timer(lambda: ops.linear(feeds["x"], w, bias), cfg) + dispatch_s
    tight["embedding_bag"] = timer(lambda: ops.embedding_bag(table, feeds["ids"], 0, None), cfg) + dispatch_s
    tight["bmm"] = timer(lambda: ops.bmm(x3, feeds["x3t"]), cfg) + dispatch_s
    extra = {op: fixed[op] - tight[op] for op in fixed if op in tight}
    return {"fixed_s": {op: v for op, v in fixed.items() if op not in heavy}, "context_s":
            max(float(np.median(list(extra.values()))), 0.0) if extra else 0.0,
            "extra_s": extra, "timer_s": clock_s, "rounds": rounds, "runs": len(samples)}

