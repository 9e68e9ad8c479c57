"""What a whole graph run costs beyond its parts: in-graph context per node, and the memory a run keeps."""
from __future__ import annotations

import numpy as np

from .. import ops
from ..backends.numpy_graph import GraphExecutor
from ..ops import VIEW_OPS
from .op_costs import node_graph
from .timing import linear_param, table_param, timer

def _synthetic_dlrm(rng, tables: int = 4):
    """A small DLRM-shaped graph (bottom MLP, embedding bags, pairwise interaction,
    top MLP) with its params and constants, built from the bundle op set."""
    params, consts, nodes = {}, {}, []

    def lin(name, x, i, o):
        w, b = linear_param(rng, i, o, "fp32")
        params[name] = w
        consts[name + ".b"] = b
        nodes.append({"op": "linear", "args": [{"v": x}, {"p": name}, {"c": name + ".b"}], "out": name})

    def relu(x):
        nodes.append({"op": "relu", "args": [{"v": x}], "out": x + ".r"})
        return x + ".r"

    lin("w0", "dense", 8, 32)
    lin("w1", relu("w0"), 32, 16)
    bottom = relu("w1")
    bags = []
    for t in range(tables):
        params[f"t{t}"] = table_param(rng, 1000, 16, 32)
        nodes.append({"op": "slice", "args": [{"v": "sparse"}, 1, t, t + 1, 1], "out": f"s{t}"})
        nodes.append({"op": "embedding_bag", "args": [{"p": f"t{t}"}, {"v": f"s{t}"}, 0, None], "out": f"e{t}"})
        bags.append({"v": f"e{t}"})
    f = tables + 1
    tri = np.triu_indices(f, 1)
    consts["ia"], consts["ib"] = tri[0].astype(np.int64), tri[1].astype(np.int64)
    nodes += [{"op": "stack", "args": [[{"v": bottom}] + bags, 1], "out": "st"},
              {"op": "transpose", "args": [{"v": "st"}, 1, 2], "out": "tr"},
              {"op": "bmm", "args": [{"v": "st"}, {"v": "tr"}], "out": "z"},
              {"op": "index", "args": [{"v": "z"}, [None, {"c": "ia"}, {"c": "ib"}]], "out": "zi"},
              {"op": "cat", "args": [[{"v": bottom}, {"v": "zi"}], 1], "out": "c"}]
    lin("w2", "c", 16 + len(tri[0]), 32)
    lin("w3", relu("w2"), 32, 1)
    nodes.append({"op": "squeeze", "args": [{"v": "w3"}, -1], "out": "y"})
    graph = {"inputs": ["dense", "sparse"], "outputs": ["y"], "nodes": nodes}
    return graph, params, consts, tables



def measure_graph_context(cfg, rng, batches, dispatch_s: float, memory: list) -> list[dict]:
    """What a node costs inside a whole graph run beyond the same call in a tight loop:
    a DLRM-shaped graph run as ``predict`` runs it (median per run) minus the sum of its
    nodes' calls each timed in a tight loop, the executor's dispatch per node and the
    kept-memory term; per node, by batch size. Under emulation (qemu-user) and on small
    cores, code and data are far less hot in a real run than in a loop of one call."""
    graph, params, consts, tables = _synthetic_dlrm(rng)
    ex = GraphExecutor(graph, params, consts)
    mem = sorted((r["bytes"], r["s"]) for r in memory)
    out = []
    n = len(graph["nodes"])
    xs, ys = [0] + [m[0] for m in mem], [0.0] + [m[1] for m in mem]
    for b in batches:
        feeds = {"dense": rng.standard_normal((b, 8), dtype=np.float32),
                 "sparse": rng.integers(0, 1000, size=(b, tables))}
        env = ex.run(feeds, keep=set())
        kept = sum(env[node["out"]].nbytes for node in graph["nodes"]
                   if node["op"] not in VIEW_OPS and isinstance(env[node["out"]], np.ndarray))
        mem_s = float(np.interp(kept, xs, ys)) if mem else 0.0
        wholes, tights = [], []
        for _ in range(5):
            wholes.append(timer(lambda: ex.run(feeds), cfg))
            tight = 0.0
            for fn, resolvers, _o in ex._steps:
                args = [r(env) for r in resolvers]
                tight += timer(lambda: fn(*args), cfg)
            tights.append(tight)
        # the least of 5 of each: on a shared VM a slow stretch of tens of ms inflated one of them
        # in some runs (b=1: 84 instead of ~50 us), i.e. 1.4 us on every node of every model
        whole, tight = min(wholes), min(tights)
        per = whole - tight - n * dispatch_s - mem_s
        out.append({"batch": int(b), "nodes": n, "whole_s": whole, "tight_sum_s": tight, "kept_bytes": int(kept),
                    "memory_s": mem_s, "per_node_s": max(per / n, -dispatch_s)})
    return out


def measure_memory(cfg, rng, quick: bool) -> list[dict]:
    """Extra seconds per run for the memory a graph run allocates (fresh pages fault in
    whenever the allocator has returned them to the kernel): a 16-node graph of relu run
    by the executor, minus the same 16 relu calls with each output freed at once, by
    total bytes allocated."""
    nodes = 16
    out = []
    kib = 1 << 10
    sizes = (128, 512, 1024, 4096) if quick else (64, 128, 256, 384, 512, 768, 1024, 2048, 4096)
    for total in (k * kib for k in sizes):
        values = total // (4 * nodes)
        x = rng.standard_normal((max(1, values // 16), 16), dtype=np.float32)
        ex = GraphExecutor(node_graph("relu", nodes), {}, {})
        t_keep = timer(lambda: ex.run({"x": x}), cfg)

        def free():
            for _ in range(nodes):
                ops.relu(x)
        t_free = timer(free, cfg)
        disp = GraphExecutor(node_graph("identity", nodes), {}, {})
        t_disp = timer(lambda: disp.run({"x": x}), cfg)
        out.append({"bytes": int(x.nbytes * nodes), "s": max(t_keep - t_free - t_disp, 0.0)})
    return out

