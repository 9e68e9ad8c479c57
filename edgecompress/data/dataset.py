"""The in-memory dataset every loader returns: named numpy arrays plus a label."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from edgecompress.errors import DataError

TASKS = ("ctr", "retrieval")


@dataclass
class Dataset:
    """Rows of named input arrays (first dimension N) and a 0/1 label.

    ``inputs`` names match the model's ``forward()`` arguments. ``vocab`` gives,
    for every integer input, the vocabulary size of each field: one entry for a
    1-D id input ``[N]``, F entries for ``[N, F]`` or multi-hot ``[N, F, L]``.
    """

    name: str
    task: str
    inputs: dict[str, np.ndarray]
    label: np.ndarray
    vocab: dict[str, list[int]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DataError(f"dataset {self.name!r}: task must be one of {TASKS}, got {self.task!r}")
        self.label = np.asarray(self.label, dtype=np.float32).reshape(-1)
        n = len(self.label)
        for key, arr in self.inputs.items():
            if arr.ndim == 0 or arr.shape[0] != n:
                raise DataError(
                    f"dataset {self.name!r}: input {key!r} has shape {arr.shape} but label has {n} rows; "
                    "every input must have the same first dimension as the label"
                )
        for key, sizes in self.vocab.items():
            if key not in self.inputs:
                raise DataError(f"dataset {self.name!r}: vocab given for {key!r}, which is not an input")
            want = 1 if self.inputs[key].ndim == 1 else self.inputs[key].shape[1]
            if len(sizes) != want:
                raise DataError(
                    f"dataset {self.name!r}: input {key!r} has {want} field(s) but vocab lists {len(sizes)} sizes"
                )

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def take(self, idx) -> "Dataset":
        """Row subset (index array, boolean mask or slice); vocab and meta are kept."""
        return Dataset(
            name=self.name,
            task=self.task,
            inputs={k: v[idx] for k, v in self.inputs.items()},
            label=self.label[idx],
            vocab={k: list(v) for k, v in self.vocab.items()},
            meta=dict(self.meta),
        )

    def split(self, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> tuple["Dataset", ...]:
        """Shuffle the rows (seeded) and cut them into parts of the given fractions."""
        fr = np.asarray(fractions, dtype=np.float64)
        if fr.ndim != 1 or len(fr) == 0 or np.any(fr < 0) or fr.sum() > 1 + 1e-6:
            raise DataError(f"split fractions must be non-negative and sum to at most 1, got {tuple(fractions)}")
        n = len(self)
        perm = np.random.default_rng(seed).permutation(n)
        cuts = np.round(np.cumsum(fr) * n).astype(np.int64).clip(0, n)
        starts = np.concatenate([[0], cuts[:-1]])
        return tuple(self.take(np.sort(perm[a:b])) for a, b in zip(starts, cuts))

    def batches(
        self, batch_size: int, shuffle: bool = False, seed: int = 0
    ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """Yield ``(inputs, label)`` numpy batches; the last one may be smaller."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        n = len(self)
        order = np.random.default_rng(seed).permutation(n) if shuffle else None
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size] if order is not None else slice(start, start + batch_size)
            yield {k: v[idx] for k, v in self.inputs.items()}, self.label[idx]

    def field_name(self, input_name: str, i: int) -> str:
        """Human name of field ``i`` of an input (from ``meta['field_names']`` when available)."""
        names = self.meta.get("field_names")
        if isinstance(names, dict):
            names = names.get(input_name)
        if self.inputs[input_name].ndim > 1 and names is not None and i < len(names):
            return f"{input_name}[{i}] ({names[i]})"
        return input_name if self.inputs[input_name].ndim == 1 else f"{input_name}[{i}]"


def _fields(arr: np.ndarray):
    """Yield (field index, ids of that field) for a [N], [N,F] or [N,F,L] id array."""
    if arr.ndim == 1:
        yield 0, arr
    else:
        for i in range(arr.shape[1]):
            yield i, arr[:, i]


def check_ids(dataset: Dataset) -> None:
    """Raise DataError naming the input and field if an id is negative or >= its vocab size."""
    for key, sizes in dataset.vocab.items():
        arr = dataset.inputs[key]
        if not np.issubdtype(arr.dtype, np.integer):
            raise DataError(
                f"dataset {dataset.name!r}: input {key!r} has a vocab but dtype {arr.dtype}; "
                "id inputs must be integer arrays"
            )
        for i, ids in _fields(arr):
            if ids.size == 0:
                continue
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= sizes[i]:
                bad = lo if lo < 0 else hi
                raise DataError(
                    f"dataset {dataset.name!r}: {dataset.field_name(key, i)} contains id {bad}, outside its "
                    f"vocabulary 0..{sizes[i] - 1}; re-index the ids densely to 0..vocab-1 or raise the vocab size"
                )


def infer_vocab(arr: np.ndarray) -> list[int]:
    """Vocab size per field as max id + 1 (at least 1)."""
    return [int(ids.max()) + 1 if ids.size else 1 for _, ids in _fields(arr)]
