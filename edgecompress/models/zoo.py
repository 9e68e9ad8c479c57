"""Registry of the built-in recommenders and helpers to size them from a data set."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from edgecompress.errors import DataError, ModelError

from .deepfm import DeepFM
from .dlrm import DLRM
from .ncf import NeuMF
from .two_tower import TwoTower
from .wide_deep import WideDeep


ZOO: dict[str, type[nn.Module]] = {
    "dlrm": DLRM,
    "deepfm": DeepFM,
    "wide_deep": WideDeep,
    "two_tower": TwoTower,
    "neumf": NeuMF,
}

DEFAULT_MAX_BATCH = 65536


def _model_class(name: str) -> type[nn.Module]:
    try:
        return ZOO[name]
    except (KeyError, TypeError):
        raise ModelError(f"unknown model {name!r}; available: {', '.join(sorted(ZOO))}") from None


def build_model(name: str, *, vocab_sizes=None, dense_dim=None, num_users=None, num_items=None,
                **kw: Any) -> nn.Module:
    """Instantiate zoo model ``name``.

    CTR models (dlrm, deepfm, wide_deep) need ``vocab_sizes`` (one size per sparse field) and
    ``dense_dim``; retrieval models (two_tower, neumf) need ``num_users`` and ``num_items``.
    Other keyword arguments go to the model constructor (e.g. ``embedding_dim``).
    """
    cls = _model_class(name)
    if cls.task == "ctr":
        required = {"vocab_sizes": vocab_sizes, "dense_dim": dense_dim}
        forbidden = {"num_users": num_users, "num_items": num_items}
    else:
        required = {"num_users": num_users, "num_items": num_items}
        forbidden = {"vocab_sizes": vocab_sizes, "dense_dim": dense_dim}
    missing = [k for k, v in required.items() if v is None]
    if missing:
        raise ModelError(f"model {name!r} ({cls.task}) needs {' and '.join(missing)}")
    extra = [k for k, v in forbidden.items() if v is not None]
    if extra:
        raise ModelError(f"model {name!r} ({cls.task}) does not take {' or '.join(extra)}")
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(kw) - set(params))
    if unknown:
        allowed = [p for p in params if p not in ("self", *required)]
        raise ModelError(f"model {name!r} got unknown argument(s) {', '.join(unknown)}; "
                         f"it accepts: {', '.join(allowed)}")
    try:
        return cls(**required, **kw)
    except (ValueError, TypeError) as e:
        raise ModelError(f"model {name!r}: {e}") from e


def model_for_data(name: str, dataset: Any, **kw: Any) -> nn.Module:
    """Build zoo model ``name`` sized for ``dataset``.

    ``dataset`` needs ``.task`` ("ctr"/"retrieval"), ``.vocab`` (input name -> list of
    per-field vocab sizes) and ``.inputs`` (input name -> numpy array, batch first).
    A 3-D ``sparse`` input ([N, F, L], multi-hot, padding ID 0) selects ``multi_hot=True``
    (DLRM only).
    """
    cls = _model_class(name)
    task = getattr(dataset, "task", None)
    if task != cls.task:
        raise DataError(f"model {name!r} is a {cls.task} model but the data set's task is {task!r}")
    vocab: Mapping[str, Any] = getattr(dataset, "vocab", None) or {}
    inputs: Mapping[str, Any] = getattr(dataset, "inputs", None) or {}
    missing = [n for n in cls.input_names if n not in inputs]
    if missing:
        raise DataError(f"model {name!r} needs input(s) {', '.join(missing)}; the data set has "
                        f"{', '.join(sorted(inputs)) or 'none'}")

    if cls.task == "ctr":
        if "sparse" not in vocab:
            raise DataError("data set has no vocab for input 'sparse'")
        vocab_sizes = [int(v) for v in vocab["sparse"]]
        dense, sparse = inputs["dense"], inputs["sparse"]
        if getattr(dense, "ndim", None) != 2:
            raise DataError(f"input 'dense' must be 2-D [N, D], got shape {getattr(dense, 'shape', None)}")
        if getattr(sparse, "ndim", None) not in (2, 3):
            raise DataError(f"input 'sparse' must be [N, F] or [N, F, L], got shape {getattr(sparse, 'shape', None)}")
        if sparse.shape[1] != len(vocab_sizes):
            raise DataError(f"input 'sparse' has {sparse.shape[1]} fields but vocab['sparse'] lists "
                            f"{len(vocab_sizes)}")
        if sparse.ndim == 3:
            if "multi_hot" not in inspect.signature(cls.__init__).parameters:
                raise DataError(f"model {name!r} takes one ID per field; the data set's sparse input is "
                                f"multi-hot {tuple(sparse.shape)} (use dlrm)")
            kw.setdefault("multi_hot", True)
        return build_model(name, vocab_sizes=vocab_sizes, dense_dim=int(dense.shape[1]), **kw)

    sizes = {}
    for key in ("user_id", "item_id"):
        v = vocab.get(key)
        if v is None or len(v) != 1:
            raise DataError(f"data set vocab[{key!r}] must be a one-element list, got {v!r}")
        sizes[key] = int(v[0])
    return build_model(name, num_users=sizes["user_id"], num_items=sizes["item_id"], **kw)


def batch_dynamic_shapes(model: nn.Module, *, max_batch: int = DEFAULT_MAX_BATCH) -> dict[str, dict[int, Any]]:
    """``dynamic_shapes`` for ``torch.export.export(model, args, dynamic_shapes=...)``:
    dim 0 (batch) of every input dynamic in [1, max_batch].

    Export with a batch >= 2 example: a batch-1 example gets specialized to 1.
    """
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    return {name: {0: batch} for name in model.input_names}


def export_model(model: nn.Module, example_args: tuple | None = None, *,
                 max_batch: int = DEFAULT_MAX_BATCH) -> "torch.export.ExportedProgram":
    """``torch.export.export`` a zoo model (eval mode) with a dynamic batch dimension."""
    model.eval()
    if example_args is None:
        example_args = model.example_inputs(4)
    return torch.export.export(model, tuple(example_args),
                               dynamic_shapes=batch_dynamic_shapes(model, max_batch=max_batch))
