"""PassContext: what passes may need beyond the program, given explicitly.

    ctx = PassContext(teacher=model, train_data=train, calibration_data=valid)
    apply_plan(program.copy(), plan, ctx)

One context serves every copy of a program (the planner applies hundreds of
plans to copies of one base program): the id counts it caches are per table of
the *source* model, which copies share, so they are counted once.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PassContext:
    teacher: object = None            # the source nn.Module (distillation)
    train_data: object = None         # training rows: row frequencies, distillation (never held-out rows)
    calibration_data: object = None   # rows activation statistics are measured on
    _id_counts: dict = field(default_factory=dict, repr=False)

    def calibration_rows(self):
        """Rows for activation statistics: the calibration data, else the training data (or None)."""
        return self.calibration_data if self.calibration_data is not None else self.train_data

    def id_counts(self, program, table: str):
        """How often each row of ``table`` occurs in the training data (None when no input traces to it)."""
        rows = program.params[table].shape[0]
        key = (table, rows)
        if key not in self._id_counts:
            self._id_counts[key] = _count_ids(self.train_data, program.index_sources.get(table), rows)
        return self._id_counts[key]


def _count_ids(data, source, rows: int):
    if data is None or source is None or source[0] not in data.inputs:
        return None
    ids = np.asarray(data.inputs[source[0]])
    if source[1] is not None and ids.ndim >= 2:
        ids = ids[:, source[1]]
    ids = ids.reshape(-1)
    ids = ids[(ids >= 0) & (ids < rows)]
    if ids.dtype.kind == "f":                  # ids carried in a float tensor (one concatenated X)
        ids = ids[ids == np.floor(ids)]
    return np.bincount(ids.astype(np.int64, copy=False), minlength=rows)
