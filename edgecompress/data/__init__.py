"""Datasets: synthetic Criteo-like CTR, MovieLens-100k, and user .npz files."""

from edgecompress.data.dataset import Dataset, check_ids, infer_vocab
from edgecompress.data.movielens import (
    Ratings,
    RetrievalData,
    leave_last_out,
    load_movielens,
    movielens_ctr,
    movielens_retrieval,
    recbole_wheel,
)
from edgecompress.data.npz import load_npz, save_npz
from edgecompress.data.synthetic import synthetic_ctr, synthetic_retrieval

__all__ = [
    "Dataset",
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
