"""Structured pruning of hidden MLP neurons: Linear layers get physically smaller.

A group (as in Torch-Pruning) is a producer Linear whose output reaches exactly
one consumer Linear through elementwise ops only (relu, sigmoid, tanh, ...):
removing hidden neuron i removes row i of the producer (and its bias) and
column i of the consumer, nothing else. Widths coupled to anything else are
left alone by construction; in DLRM that is the bottom MLP's output, tied to
every table's dimension through the pairwise interaction (Torch-Pruning's graph
search hangs on it). Our rule for that coupling: keep the interaction width and
shrink tables with EmbeddingDimReduce, which projects back to it."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import CompileError
from .base import PassConfig, register

ELEMENTWISE = {"relu", "sigmoid", "tanh", "identity"}


@dataclasses.dataclass(frozen=True)
class MLPNeuronPrune(PassConfig):
    NAME = "mlp_neuron_prune"
    VERSION = 1
    keep_ratio: float = 0.5
    layers: tuple | None = None            # producer weight names; None = every prunable group
    importance: str = "magnitude"          # "magnitude" | "taylor" (first order on calibration data)
    min_width: int = 4


@dataclasses.dataclass
class Group:
    producer: str          # weight param of the Linear whose outputs are pruned
    bias: str | None
    consumer: str          # weight param of the Linear whose inputs are pruned
    out_value: str         # the producer node's output value (for taylor hooks)


def _uses(graph):
    uses = {}
    for n in graph["nodes"]:
        stack = list(n["args"])
        while stack:
            a = stack.pop()
            if isinstance(a, list):
                stack.extend(a)
            elif isinstance(a, dict) and "v" in a:
                uses.setdefault(a["v"], []).append(n)
    return uses


def find_groups(program) -> list[Group]:
    uses, outputs, groups = _uses(program.graph), set(program.graph["outputs"]), []
    for n in program.graph["nodes"]:
        if n["op"] != "linear" or not isinstance(n["args"][1], dict) or "p" not in n["args"][1]:
            continue
        w = n["args"][1]["p"]
        b = n["args"][2]["p"] if isinstance(n["args"][2], dict) and "p" in n["args"][2] else None
        v = n["out"]
        while v not in outputs and len(uses.get(v, [])) == 1:
            user = uses[v][0]
            if user["op"] in ELEMENTWISE and user["args"][0] == {"v": v}:
                v = user["out"]
                continue
            if user["op"] == "linear" and user["args"][0] == {"v": v} and "p" in user["args"][1]:
                groups.append(Group(w, b, user["args"][1]["p"], n["out"]))
            break
    return groups


def _taylor_importance(program, groups):
    """|activation x gradient| of the task loss, averaged over calibration rows."""
    import torch

    from ..graph.torch_exec import ProgramModule, _key
    data = program.context.get("calibration_data") or program.context.get("train_data")
    if data is None:
        raise CompileError("mlp_neuron_prune(importance='taylor') needs calibration data")
    module = ProgramModule(program, trainable=True)
    acts = {}

    def capture(name):
        def hook(mod, inp, out):      # must return None: a value would replace the output
            out.retain_grad()
            acts[name] = out
        return hook
    hooks = [module.linears[_key(g.producer)].register_forward_hook(capture(g.producer)) for g in groups]
    n = min(len(data), 4096)
    inputs = [torch.as_tensor(np.asarray(data.inputs[k][:n])) for k in program.input_names]
    label = torch.as_tensor(np.asarray(data.label[:n], dtype=np.float32))
    out = module(*inputs).reshape(-1)
    torch.nn.functional.binary_cross_entropy_with_logits(out, label).backward()
    for h in hooks:
        h.remove()
    return {name: (a * a.grad).abs().mean(0).detach().numpy() for name, a in acts.items()}


@register(MLPNeuronPrune)
def prune_mlp_(program, config: MLPNeuronPrune, filter_fn):
    if not 0 < config.keep_ratio <= 1:
        raise CompileError(f"mlp_neuron_prune: keep_ratio must be in (0, 1], got {config.keep_ratio}")
    if config.importance not in ("magnitude", "taylor"):
        raise CompileError(f"mlp_neuron_prune: importance must be 'magnitude' or 'taylor', got {config.importance!r}")
    groups = [g for g in find_groups(program)
              if (config.layers is None or g.producer in config.layers) and filter_fn(g.producer, "linear")]
    for g in groups:
        for name in (g.producer, g.consumer) + ((g.bias,) if g.bias else ()):
            if program.params[name].kind != "fp32":
                raise CompileError(f"mlp_neuron_prune: {name!r} is already quantized; prune before quantizing")
    taylor = _taylor_importance(program, groups) if config.importance == "taylor" and groups else {}
    for g in groups:
        w1, w2 = program.params[g.producer], program.params[g.consumer]
        width = w1.shape[0]
        keep = max(config.min_width, int(round(width * config.keep_ratio)))
        if keep >= width:
            continue
        if config.importance == "taylor":
            score = taylor[g.producer]
        else:
            score = np.linalg.norm(w1.arrays["data"], axis=1) * np.linalg.norm(w2.arrays["data"], axis=0)
        kept = np.sort(np.argsort(-score, kind="stable")[:keep])
        a1 = w1.arrays["data"][kept]
        a2 = np.ascontiguousarray(w2.arrays["data"][:, kept])
        program.params[g.producer] = w1.replace(arrays={"data": a1}, shape=a1.shape,
                                                info={**w1.info, "width": [width, keep]})
        program.params[g.consumer] = w2.replace(arrays={"data": a2}, shape=a2.shape,
                                                info={**w2.info, "in_width": [width, keep]})
        if g.bias:
            b = program.params[g.bias]
            program.params[g.bias] = b.replace(arrays={"data": b.arrays["data"][kept]}, shape=(keep,))
        program.log.append({"pass": config.NAME, "group": [g.producer, g.consumer], "width": [width, keep],
                            "importance": config.importance})
    return program
