"""The numpy backend: executes the bundle's graph node by node with ops.OPS."""
from __future__ import annotations

import numpy as np

from ..array_checks import check_arrays
from ..bundle import Bundle
from ..errors import BundleError
from ..ops import OPS, check_ops
from ..params import KINDS, OPTIONAL, Param


def load_params(bundle: Bundle) -> dict[str, Param]:
    params = {}
    for name, meta in bundle.manifest.get("params", {}).items():
        kind = meta.get("kind")
        roles = KINDS.get(kind, ()) + OPTIONAL
        arrays = {r: bundle.array(meta["members"][r]) for r in roles if r in meta.get("members", {})}
        check_arrays(name, kind, meta.get("shape", ()), meta.get("bits", 32), arrays)
        params[name] = Param(name, kind, arrays, meta.get("shape", ()), meta.get("bits", 32), act=meta.get("act"))
    return params


class GraphExecutor:
    """Turns the graph JSON into a list of (fn, arg resolvers, out) steps once,
    so a call is a tight loop over numpy functions."""

    def __init__(self, graph: dict, params: dict[str, Param], constants: dict[str, np.ndarray]):
        nodes = graph.get("nodes")
        if not isinstance(nodes, list):
            raise BundleError("manifest graph has no node list")
        check_ops(nodes)
        self.inputs = list(graph["inputs"])
        self.outputs = list(graph["outputs"])
        self._params, self._consts = params, constants
        self._steps = [(OPS[n["op"]], [self._resolver(a) for a in n.get("args", [])], n["out"])
                       for n in nodes]
        self._frees = self._last_uses(nodes)
        self.ops = [n["op"] for n in nodes]

    def _last_uses(self, nodes) -> list[tuple]:
        """Per step, the values no later step reads: run() drops them right away, so a
        run keeps only live intermediates (lower peak memory, warm reused blocks)."""
        last: dict[str, int] = {}

        def reads(a, i):
            if isinstance(a, dict) and "v" in a:
                last[a["v"]] = i
            elif isinstance(a, list):
                for x in a:
                    reads(x, i)
        for i, n in enumerate(nodes):
            for a in n.get("args", []):
                reads(a, i)
            last.setdefault(n["out"], i)          # never read: free after its own step
        frees: list[list] = [[] for _ in nodes]
        for name, i in last.items():
            if name not in self.outputs:
                frees[i].append(name)
        return [tuple(f) for f in frees]

    def _resolver(self, a):
        if isinstance(a, dict):
            if "v" in a:
                key = a["v"]
                return lambda env: env[key]
            if "p" in a:
                if a["p"] not in self._params:
                    raise BundleError(f"graph refers to unknown parameter {a['p']!r}")
                p = self._params[a["p"]]
                return lambda env: p
            if "c" in a:
                if a["c"] not in self._consts:
                    raise BundleError(f"graph refers to unknown constant {a['c']!r}")
                c = self._consts[a["c"]]
                return lambda env: c
            raise BundleError(f"bad graph argument {a!r}")
        if isinstance(a, list):
            parts = [self._resolver(x) for x in a]
            return lambda env: [r(env) for r in parts]
        return lambda env: a

    def run(self, feeds: dict[str, np.ndarray], keep=None):
        """Outputs for ``feeds``; with ``keep`` (value names) the whole
        environment is returned instead, for calibration on the host."""
        env = dict(feeds)
        if keep is not None:
            for fn, resolvers, out in self._steps:
                env[out] = fn(*[r(env) for r in resolvers])
            return env
        for (fn, resolvers, out), frees in zip(self._steps, self._frees):
            env[out] = fn(*[r(env) for r in resolvers])
            for k in frees:
                env.pop(k, None)
        outs = [env[o] for o in self.outputs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def run_timed(self, feeds: dict[str, np.ndarray], clock, times: list) -> None:
        """run() with ``clock()`` read around every node, appending each node's seconds to
        ``times`` in graph order (the op profile: edgecompress_runtime/profile.py)."""
        env = dict(feeds)
        for (fn, resolvers, out), frees in zip(self._steps, self._frees):
            t = clock()
            env[out] = fn(*[r(env) for r in resolvers])
            times.append(clock() - t)
            for k in frees:
                env.pop(k, None)


class NumpyBackend:
    name = "numpy"

    def __init__(self, bundle: Bundle):
        params = load_params(bundle)
        consts = {k: bundle.array(m) for k, m in bundle.manifest.get("constants", {}).items()}
        self.executor = GraphExecutor(bundle.manifest.get("graph", {}), params, consts)
        self.params = params

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.executor.run(feeds)
