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
from ..graph.program import BIAS_ARG, WEIGHT_ARG
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

    def __post_init__(self):
        self.check_range("keep_ratio", 0, 1, lo_open=True)
        self.check_names("layers")
        self.check_choice("importance", ("magnitude", "taylor"))
        self.check_range("min_width", 1, float("inf"))


@dataclasses.dataclass
class Group:
    producer: str          # weight param of the Linear whose outputs are pruned
    bias: str | None
    consumer: str          # weight param of the Linear whose inputs are pruned
    out_value: str         # the producer node's output value (for taylor hooks)


def find_groups(program) -> list[Group]:
    users, outputs, groups = program.value_users(), set(program.graph["outputs"]), []
    for n in program.nodes_of("linear"):
        w = n.param(WEIGHT_ARG)
        if w is None:
            continue
        v = n.out
        while v not in outputs and len(users.get(v, [])) == 1:
            user = users[v][0]
            if user.op in ELEMENTWISE and user.reads(v):
                v = user.out
                continue
            if user.op == "linear" and user.reads(v) and user.param(WEIGHT_ARG):
                groups.append(Group(w, n.param(BIAS_ARG), user.param(WEIGHT_ARG), n.out))
            break
    return groups


def _taylor_importance(program, groups, ctx):
    """|activation x gradient| of the task loss, averaged over calibration rows."""
    import torch

    from ..graph.torch_exec import ProgramModule, _key
    data = ctx.calibration_rows()
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


def shrink_group(program, g: Group, kept: np.ndarray) -> None:
    """Keep hidden neurons ``kept`` (sorted) of group ``g``: producer rows (+ bias), consumer
    columns. Shared with gradual_prune.py, so both write the same shapes."""
    w1, w2 = program.params[g.producer], program.params[g.consumer]
    width, keep = w1.shape[0], len(kept)
    a1 = w1.arrays["data"][kept]
    a2 = np.ascontiguousarray(w2.arrays["data"][:, kept])
    program.params[g.producer] = w1.replace(arrays={"data": a1}, shape=a1.shape,
                                            info={**w1.info, "width": [width, keep]})
    program.params[g.consumer] = w2.replace(arrays={"data": a2}, shape=a2.shape,
                                            info={**w2.info, "in_width": [width, keep]})
    if g.bias:
        b = program.params[g.bias]
        program.params[g.bias] = b.replace(arrays={"data": b.arrays["data"][kept]}, shape=(keep,))


@register(MLPNeuronPrune)
def prune_mlp_(program, config: MLPNeuronPrune, ctx, filter_fn):
    groups = [g for g in find_groups(program)
              if (config.layers is None or g.producer in config.layers) and filter_fn(g.producer, "linear")]
    for g in groups:
        for name in (g.producer, g.consumer) + ((g.bias,) if g.bias else ()):
            if program.params[name].kind != "fp32":
                raise CompileError(f"mlp_neuron_prune: {name!r} is already quantized; prune before quantizing")
    taylor = _taylor_importance(program, groups, ctx) if config.importance == "taylor" and groups else {}
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
        shrink_group(program, g, np.sort(np.argsort(-score, kind="stable")[:keep]))
        program.log.append({"pass": config.NAME, "group": [g.producer, g.consumer], "width": [width, keep],
                            "importance": config.importance})
    return program
