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
