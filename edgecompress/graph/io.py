"""A model's inputs and outputs as the bundle sees them: flat named tensors.

Models take named tensors (``forward(dense, sparse)``) or one dict of tensors
(``forward(self, x)`` reading ``x["user_id"]``), and return one tensor, a tuple
or a dict of heads, as logits or as probabilities (a sigmoid inside forward).
The bundle stores the flat input names and one named output per head with its
form; metrics and distillation read the chosen head as a logit.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataError

PROB_EPS = 1e-7     # probabilities are clipped this far from 0 and 1 before the logit


def forward_input_names(model: torch.nn.Module) -> list[str]:
    sig = inspect.signature(model.forward)
    return [n for n, p in sig.parameters.items()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


@dataclass
class CallConvention:
    """How the source model takes its inputs: named tensors (``forward(dense, sparse)``)
    or one dict of tensors (``forward(self, x)`` reading ``x["user_id"]``). The bundle
    always sees the flat names."""

    style: str                  # "named" | "dict"
    names: list                 # the flat input names, in the model's order
    arg: str | None = None      # the dict argument's name (style "dict")

    @classmethod
    def infer(cls, model, data_names) -> "CallConvention":
        params = forward_input_names(model)
        data_names = list(data_names)
        if set(params) <= set(data_names) or set(data_names) <= set(params):
            return cls("named", [p for p in params if p in data_names])
        if len(params) == 1:
            return cls("dict", data_names, params[0])
        missing = [n for n in params if n not in data_names]
        raise DataError(f"the data has no input {missing[0]!r} that the model's forward() takes; "
                        f"data inputs: {', '.join(sorted(data_names))}; forward() takes: {', '.join(params)}")

    def pack(self, inputs: dict) -> dict:
        if self.style == "dict":
            return {self.arg: {k: inputs[k] for k in self.names}}
        return {k: inputs[k] for k in self.names}

    def __call__(self, model, inputs: dict):
        return model(**self.pack(inputs))

    def to_dict(self) -> dict:
        return {"style": self.style, "arg": self.arg, "names": list(self.names)}


def output_names(out) -> list[str]:
    """Names of a model output's tensors: "output" for one tensor, dict keys, output_<i> for tuples."""
    import torch.utils._pytree as pytree
    leaves, _ = pytree.tree_flatten_with_path(out)
    if isinstance(out, torch.Tensor):
        return ["output"]
    names = []
    for path, _ in leaves:
        parts = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        names.append(".".join(parts) if isinstance(out, dict) else "output_" + "_".join(parts))
    return names


def flat_outputs(out) -> list:
    import torch.utils._pytree as pytree
    return pytree.tree_leaves(out)


def metric_index(outputs: list, metric_output):
    """Which head metrics read: its index, or (index, column) for one column of a [B, k] head.
    ``metric_output``: None (the first head, its first column), a head name, "name[j]", or an index."""
    names = [o["name"] for o in outputs]
    if metric_output is None:
        return 0
    if isinstance(metric_output, int) and 0 <= metric_output < len(names):
        return metric_output
    text = str(metric_output)
    col = None
    if text.endswith("]") and "[" in text:
        text, _, rest = text[:-1].rpartition("[")
        col = int(rest) if rest.isdigit() else None
    if text in names:
        i = names.index(text)
        if col is None:
            return i
        if col < int(outputs[i].get("width", 1)):
            return (i, col)
    raise DataError(f"metric_output {metric_output!r} is not an output of the model; outputs: "
                    + ", ".join(f"{o['name']} (width {o.get('width', 1)})" for o in outputs))


def metric_head(program) -> dict:
    """The output entry metrics read (``program.metric_output`` is an index or (index, column))."""
    i = program.metric_output
    return program.outputs[i[0] if isinstance(i, (tuple, list)) else i]


def to_logit(x, form: str):
    """A probability head as a logit (numpy or torch); logits pass through."""
    if form != "probability":
        return x
    if isinstance(x, torch.Tensor):
        return torch.logit(x.clamp(PROB_EPS, 1 - PROB_EPS))
    p = np.clip(np.asarray(x, dtype=np.float64), PROB_EPS, 1 - PROB_EPS)
    return (np.log(p) - np.log1p(-p)).astype(np.float32)


def head_logits(out, outputs: list, index):
    """The chosen head of a model's output (tensor, tuple, dict or runtime dict) as logits [B].
    ``index`` as metric_index returns it; a [B, k] head is read at one column (default 0)."""
    index, column = index if isinstance(index, (tuple, list)) else (index, 0)
    if isinstance(out, dict) and outputs and outputs[index]["name"] in out:
        head = out[outputs[index]["name"]]
    elif isinstance(out, (dict, list, tuple)):
        head = flat_outputs(out)[index]
    else:
        head = out
    form = outputs[index]["form"] if outputs else "logit"
    if getattr(head, "ndim", 1) > 1 and column is not None:     # column None: every column (retrieval scores)
        head = head.reshape(head.shape[0], -1)[:, column]
    return to_logit(head.reshape(-1) if hasattr(head, "reshape") else head, form)


def source_predict_fn(model, call: CallConvention, outputs: list, index: int):
    """The source model as a numpy predict_fn returning the metric head's logits."""
    def predict(inputs: dict) -> np.ndarray:
        tensors = {}
        for k in call.names:
            a = np.ascontiguousarray(inputs[k])
            if a.dtype == np.float64:
                a = a.astype(np.float32)
            elif a.dtype.kind in "iu" and a.dtype != np.int64:
                a = a.astype(np.int64)
            tensors[k] = torch.from_numpy(a)
        with torch.no_grad():
            out = call(model.eval(), tensors)
        return np.asarray(head_logits(out, outputs, index).detach().float().numpy())
    return predict


def all_outputs_flat(out, n: int) -> np.ndarray:
    """Every head of an output as one float32 [n * total width] vector (the parity reference layout)."""
    leaves = flat_outputs(out) if isinstance(out, (dict, list, tuple)) else [out]
    cols = [np.asarray(x.detach().float().numpy() if isinstance(x, torch.Tensor) else x,
                       dtype=np.float32).reshape(n, -1) for x in leaves]
    return np.concatenate(cols, axis=1).reshape(-1)


def output_diff(got, want, inputs: dict) -> dict:
    """Max and mean abs difference of two flat output vectors (every head, same layout) on ``inputs``."""
    rows = len(next(iter(inputs.values()))) if inputs else 0
    got, want = np.asarray(got, np.float64).reshape(-1), np.asarray(want, np.float64).reshape(-1)
    if got.shape != want.shape:
        return {"rows": rows, "max_abs_diff": float("inf"), "mean_abs_diff": float("inf"),
                "error": f"{got.size} output values for {want.size} expected"}
    d = np.abs(got - want)
    return {"rows": rows, "max_abs_diff": float(d.max()) if d.size else 0.0,
            "mean_abs_diff": float(d.mean()) if d.size else 0.0}
