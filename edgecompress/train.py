"""A small trainer: Adam + BCEWithLogits, for CTR rows and positive-only retrieval pairs."""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from edgecompress.data.dataset import Dataset
from edgecompress.errors import DataError


def _num_items(dataset: Dataset, item_key: str) -> int:
    if "num_items" in dataset.meta:
        return int(dataset.meta["num_items"])
    if item_key in dataset.vocab:
        return int(dataset.vocab[item_key][0])
    raise DataError(
        f"retrieval dataset {dataset.name!r} has neither meta['num_items'] nor a vocab for {item_key!r}; "
        "set dataset.meta['num_items'] so negatives can be sampled"
    )


def _to_torch(batch: dict) -> dict:
    out = {}
    for k, v in batch.items():
        a = np.ascontiguousarray(v)
        if a.dtype == np.float64:
            a = a.astype(np.float32)
        out[k] = torch.from_numpy(a)
    return out


def train(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    epochs: int = 2,
    batch_size: int = 1024,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    negatives: int = 4,
    seed: int = 0,
    progress: bool = True,
    time_budget_s: float | None = None,
    item_key: str = "item_id",
) -> dict:
    """Train ``model`` in place; returns a history dict.

    CTR: ``model(**inputs) -> logits [B]`` against the 0/1 label. Retrieval
    (positive pairs only): each positive gets ``negatives`` items drawn uniformly
    from ``meta["num_items"]`` (label 0; accidental hits are not filtered).
    Stops early once ``time_budget_s`` has elapsed. Seeds torch (global RNG) with
    ``seed``; leaves the model in eval mode. History: ``loss`` (mean per epoch),
    ``epochs`` (fraction completed), ``steps``, ``seconds``, ``stopped_early``.
    """
    if len(dataset) == 0:
        raise DataError(f"dataset {dataset.name!r} is empty; nothing to train on")
    retrieval = dataset.task == "retrieval"
    if retrieval:
        if item_key not in dataset.inputs:
            raise DataError(
                f"retrieval dataset {dataset.name!r} has no {item_key!r} input (has {sorted(dataset.inputs)}); "
                f"name the item id input {item_key!r} or pass item_key="
            )
        n_items = _num_items(dataset, item_key)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    try:  # fused CPU Adam: one kernel per step, far fewer thread syncs than the per-tensor loop
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError, TypeError):
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    steps_per_epoch = -(-len(dataset) // batch_size)
    history: dict = {"loss": [], "epochs": 0.0, "steps": 0, "seconds": 0.0, "stopped_early": False}
    start = time.perf_counter()
    model.train()
    bar = tqdm(total=epochs * steps_per_epoch, disable=None if progress else True, desc=f"train {dataset.name}")
    try:
        for epoch in range(epochs):
            total, count = 0.0, 0
            for step, (inputs, label) in enumerate(dataset.batches(batch_size, shuffle=True, seed=seed + epoch)):
                if retrieval and negatives > 0:
                    b = len(label)
                    inputs = {k: np.concatenate([v] + [v] * negatives) for k, v in inputs.items()}
                    neg = rng.integers(0, n_items, b * negatives)
                    inputs[item_key] = np.concatenate([inputs[item_key][:b], neg.astype(inputs[item_key].dtype)])
                    label = np.concatenate([label, np.zeros(b * negatives, dtype=np.float32)])
                logits = model(**_to_torch(inputs)).reshape(-1)
                loss = loss_fn(logits, torch.from_numpy(np.asarray(label, dtype=np.float32)))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                value = float(loss.detach())
                total += value * len(label)
                count += len(label)
                history["steps"] += 1
                bar.update(1)
                if step % 20 == 0:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{value:.4f}")
                if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
                    history["stopped_early"] = True
                    history["epochs"] = epoch + (step + 1) / steps_per_epoch
                    break
            history["loss"].append(total / max(count, 1))
            if history["stopped_early"]:
                break
            history["epochs"] = float(epoch + 1)
    finally:
        bar.close()
        model.eval()
    history["seconds"] = time.perf_counter() - start
    return history
