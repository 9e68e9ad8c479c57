"""User data as ``.npz``: one array per model input plus ``label``."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from edgecompress.data.dataset import Dataset, check_ids, infer_vocab
from edgecompress.errors import DataError

_META_KEY = "_edgecompress_meta"  # JSON string written by save_npz: name, task, vocab, small meta


def load_npz(path, task: str = "ctr") -> Dataset:
    """Load a ``.npz`` of named input arrays (names = the model's forward() args) + ``label``.

    Integer arrays are id inputs: their vocab is max id + 1 per field unless the
    file was written by :func:`save_npz` (``meta["vocab_inferred"]`` says which).
    Floating arrays become float32, integer arrays int64. For ``task="retrieval"``
    a missing ``label`` means all rows are positives.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"data file {p} does not exist; pass the path of a .npz written with numpy.savez")
    if not zipfile.is_zipfile(p):
        raise DataError(f"{p} is not a valid .npz file (not a zip archive); write it with numpy.savez")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise DataError(
                f"{p} contains an object (pickled) array; save only numeric arrays "
                "(e.g. np.asarray(x, dtype=np.int64)) so the file loads without pickle"
            ) from exc
        raise DataError(f"{p} is not a valid .npz file ({exc}); write it with numpy.savez") from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{p} is not a valid .npz file ({exc}); write it with numpy.savez") from exc

    saved: dict = {}
    if _META_KEY in arrays:
        try:
            saved = json.loads(str(arrays.pop(_META_KEY)))
        except json.JSONDecodeError as exc:
            raise DataError(f"{p}: {_META_KEY} is not valid JSON ({exc}); re-save the data with save_npz") from exc
    task = saved.get("task", task)

    if "label" not in arrays:
        if task != "retrieval":
            raise DataError(
                f"{p} has no 'label' array (found {sorted(arrays)}); add label=<0/1 array of length N> to the .npz"
            )
        n = len(next(iter(arrays.values()))) if arrays else 0
        arrays["label"] = np.ones(n, dtype=np.float32)
    label = arrays.pop("label")
    if not arrays:
        raise DataError(f"{p} holds only 'label'; add one array per model input (named like forward() args)")
    for k, a in {**arrays, "label": label}.items():
        if a.dtype.kind not in "biuf":
            raise DataError(f"{p}: array {k!r} has dtype {a.dtype}; only numeric/bool arrays are supported")
    if label.ndim != 1 and not (label.ndim == 2 and label.shape[1] == 1):
        raise DataError(f"{p}: label must be 1-D [N], got shape {label.shape}")
    label = label.reshape(-1).astype(np.float64)
    n = len(label)
    for k, a in arrays.items():
        if a.ndim == 0 or a.shape[0] != n:
            raise DataError(
                f"{p}: array {k!r} has shape {a.shape} but label has {n} rows; every array needs the same first dim"
            )
    if np.isnan(label).any():
        raise DataError(f"{p}: label has {int(np.isnan(label).sum())} NaN value(s); drop or fill those rows")
    bad = ~np.isin(label, (0.0, 1.0))
    if bad.any():
        raise DataError(
            f"{p}: label must be 0/1 but contains {np.unique(label[bad])[:5].tolist()}; binarize it "
            "(e.g. label = (rating >= 4))"
        )

    inputs, vocab = {}, {}
    saved_vocab = saved.get("vocab", {})
    for k, a in arrays.items():
        if a.dtype.kind in "iu":
            a = a.astype(np.int64)
            vocab[k] = [int(v) for v in saved_vocab[k]] if k in saved_vocab else infer_vocab(a)
        elif a.dtype.kind == "b":
            a = a.astype(np.float32)
        else:
            a = a.astype(np.float32)
        inputs[k] = a
    meta = dict(saved.get("meta", {}))
    meta.update(source=str(p), vocab_inferred=sorted(k for k in vocab if k not in saved_vocab))
    if task == "retrieval":
        for key, name in (("num_users", "user_id"), ("num_items", "item_id")):
            if name in vocab and key not in meta:
                meta[key] = vocab[name][0]
    ds = Dataset(name=saved.get("name", p.stem), task=task, inputs=inputs, label=label, vocab=vocab, meta=meta)
    check_ids(ds)  # catches negative ids (and ids beyond a saved vocab)
    return ds


def save_npz(dataset: Dataset, path) -> Path:
    """Write ``dataset`` so :func:`load_npz` gives it back (inputs, label, vocab, JSON-able meta)."""
    reserved = {"label", _META_KEY} & set(dataset.inputs)
    if reserved:
        raise DataError(f"input name(s) {sorted(reserved)} are reserved in .npz files; rename the input(s)")
    meta = {}
    for k, v in dataset.meta.items():
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue  # arrays and other non-JSON values are not kept
        meta[k] = v
    header = {"name": dataset.name, "task": dataset.task, "vocab": dataset.vocab, "meta": meta}
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "wb") as f:  # a file object: numpy would otherwise append ".npz" to other suffixes
        np.savez(f, **dataset.inputs, label=dataset.label, **{_META_KEY: np.array(json.dumps(header))})
    return p
