"""Datasets: synthetic Criteo-like CTR, MovieLens-100k, and user .npz files."""

from edgecompress.data.dataset import Dataset, check_ids, infer_vocab
from edgecompress.data.movielens import (
    Ratings,
    RetrievalData,
    leave_last_out,
    load_movielens,
    movielens_ctr,
    movielens_retrieval,
)
from edgecompress.data.movielens_files import recbole_wheel
from edgecompress.data.npz import load_npz, save_npz
from edgecompress.data.synthetic import synthetic_ctr, synthetic_retrieval



def load(spec):
    """Data named as the CLI names it: ``synthetic``, ``movielens-ctr``, ``movielens-retrieval`` or a
    ``.npz`` path; a Dataset / RetrievalData is returned as it is."""
    from pathlib import Path

    from edgecompress.errors import DataError
    if not isinstance(spec, (str, Path)):
        return spec
    spec = str(spec)
    if spec == "synthetic":
        return synthetic_ctr(n=20_000, seed=1)
    if spec == "movielens-ctr":
        return movielens_ctr()
    if spec == "movielens-retrieval":
        return movielens_retrieval()
    if spec.endswith(".npz"):
        return load_npz(spec)
    raise DataError(f"data must be synthetic, movielens-ctr, movielens-retrieval or a .npz file, got {spec!r}")


__all__ = [
    "Dataset",
    "load",
    "Ratings",
    "RetrievalData",
    "check_ids",
    "infer_vocab",
    "leave_last_out",
    "load_movielens",
    "load_npz",
    "movielens_ctr",
    "movielens_retrieval",
    "recbole_wheel",
    "save_npz",
    "synthetic_ctr",
    "synthetic_retrieval",
]
