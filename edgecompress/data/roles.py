"""The three roles of data in a compile: training rows (frequencies, distillation), validation
rows (the planner chooses on them) and test rows (every reported figure)."""
from __future__ import annotations

import dataclasses

import numpy as np


def split_roles(data, seed: int = 0):
    """One held-out set -> (validation, test) halves, seeded; CTR rows stratified by label,
    retrieval data by test user. Plans are chosen on validation rows; every figure is on test rows."""
    rng = np.random.default_rng(seed)
    if hasattr(data, "test_user"):
        order = rng.permutation(len(data.test_user))
        half = len(order) // 2
        pick = [np.sort(order[:half]), np.sort(order[half:])]
        return tuple(dataclasses.replace(data, test_user=data.test_user[i], test_item=data.test_item[i])
                     for i in pick)
    label = np.asarray(data.label)
    valid = []
    for cls in np.unique(label):
        rows = rng.permutation(np.flatnonzero(label == cls))
        valid.append(rows[: len(rows) // 2])
    valid = np.sort(np.concatenate(valid)) if valid else np.zeros(0, np.int64)
    test = np.setdiff1d(np.arange(len(label)), valid)
    return data.take(valid), data.take(test)


def rows_of(d) -> int:
    return len(d.test_user) if hasattr(d, "test_user") else len(d)


def _row_keys(d) -> list[bytes]:
    """One key per row: the bytes of all its inputs (and its label)."""
    n = len(d)
    parts = [np.ascontiguousarray(np.asarray(d.inputs[k])).reshape(n, -1).view(np.uint8).reshape(n, -1)
             for k in sorted(d.inputs)]
    parts.append(np.ascontiguousarray(np.asarray(d.label, dtype=np.float64)).reshape(n, -1).view(np.uint8))
    return list(map(bytes, np.concatenate(parts, axis=1)))


def overlap(train, held_out) -> int:
    """Rows of ``held_out`` that also appear, inputs and label alike, among ``train``'s rows
    (CTR datasets; retrieval data keeps its held-out items apart by construction: 0)."""
    if train is None or held_out is None or not hasattr(train, "inputs") or not hasattr(held_out, "inputs") \
            or sorted(train.inputs) != sorted(held_out.inputs):
        return 0
    seen = set(_row_keys(train))
    return sum(k in seen for k in _row_keys(held_out))
