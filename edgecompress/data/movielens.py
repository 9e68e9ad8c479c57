"""MovieLens-100k: ratings, a CTR view and a leave-last-out retrieval view.

The files are read by ``data/movielens_files.py``. The data is never shipped with edgecompress (licence). By default it is read
straight out of the RecBole 1.2.1 wheel from PyPI (``recbole/dataset_example/
ml-100k/``: ``ml-100k.inter``, ``.user``, ``.item``; ``.kg``/``.link`` are
ignored), which is downloaded once with ``pip download`` into a cache folder and
never installed. A GroupLens copy works too: pass the path of ``u.data``, of its
folder, or of the GroupLens ``ml-100k.zip``; or the path of a RecBole ``.inter``
file. Side files (``u.user``/``u.item`` or ``<stem>.user``/``<stem>.item``) next
to the ratings file are used when present.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgecompress.data.dataset import Dataset
from edgecompress.data.movielens_files import (AGE_BUCKETS, dense_ids, open_files, read_items, read_ratings,
                                               read_users)


@dataclass
class Ratings:
    """MovieLens ratings with dense ids; per-user / per-item side features if available.

    ``user``, ``item``, ``rating``, ``timestamp`` are per-rating arrays. ``user_features``
    arrays are indexed by dense user id (``age`` -1 if unknown; ``gender``,
    ``occupation``, ``zip_region`` codes with 0 = unknown, labels in
    ``meta["categories"]``); ``item_features`` by dense item id (``release_year``
    NaN if unknown, ``genres`` bool [I, 19], ``genre`` first-genre code).
    ``meta["user_ids"][u]`` / ``meta["item_ids"][i]`` are the raw ids.
    Also readable like a dict: ``r["user"]``.
    """

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray
    user_features: dict[str, np.ndarray] = field(default_factory=dict)
    item_features: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.user)

    def __getitem__(self, key: str):
        return getattr(self, key)

    @property
    def num_users(self) -> int:
        return len(self.meta["user_ids"])

    @property
    def num_items(self) -> int:
        return len(self.meta["item_ids"])


def load_movielens(path=None, cache_dir=None) -> Ratings:
    """Load MovieLens-100k ratings (see the module doc for accepted paths)."""
    files, name = open_files(path, cache_dir)
    try:
        users, items, rating, timestamp, recbole = read_ratings(files, name)
        user, raw_users = dense_ids(users)
        item, raw_items = dense_ids(items)
        meta: dict = {"source": f"{files.where}/{name}", "user_ids": raw_users, "item_ids": raw_items}
        grouplens = not recbole and name.startswith("u.")
        stem = name[: -len(".inter")] if name.endswith(".inter") else name
        ufeat = read_users(files, grouplens, stem, raw_users, meta)
        ifeat = read_items(files, grouplens, stem, raw_items, meta)
    finally:
        files.close()
    meta["side_files"] = sorted(({"user"} if ufeat else set()) | ({"item"} if ifeat else set()))
    return Ratings(user, item, rating, timestamp, ufeat, ifeat, meta)


def _standardize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    fill = np.nanmean(x) if np.isfinite(x).any() else 0.0
    x = np.where(np.isfinite(x), x, fill)
    return ((x - x.mean()) / (x.std() + 1e-9)).astype(np.float32)


def _norm_stats(dense: dict) -> dict:
    """How _standardize maps each raw column: model value = (raw - mean) / std, missing raw -> fill."""
    out: dict = {"rule": "(raw - mean) / std; a missing raw value counts as fill", "columns": list(dense),
                 "mean": [], "std": [], "fill": []}
    for v in dense.values():
        x = np.asarray(v, dtype=np.float64)
        fill = float(np.nanmean(x)) if np.isfinite(x).any() else 0.0
        x = np.where(np.isfinite(x), x, fill)
        out["mean"].append(float(x.mean()))
        out["std"].append(float(x.std() + 1e-9))
        out["fill"].append(fill)
    return out


def movielens_ctr(path=None, cache_dir=None, threshold: float = 4.0) -> Dataset:
    """CTR view: label = rating >= threshold.

    ``sparse`` int64[N, F] fields: user, item, then (when the side files exist)
    gender, age_bucket, occupation, zip_region, genre. ``dense`` float32[N, D],
    standardized: timestamp, log user activity, log item popularity, then age and
    release year when known. Names in ``meta["field_names"]`` / ``meta["dense_names"]``.
    """
    r = load_movielens(path, cache_dir)
    uf, itf = r.user_features, r.item_features
    fields = {"user": (r.user, r.num_users), "item": (r.item, r.num_items)}
    if "gender" in uf:
        fields["gender"] = (uf["gender"][r.user], len(r.meta["categories"]["gender"]))
    if "age" in uf:
        age = uf["age"][r.user]
        bucket = np.where(age < 0, 0, 1 + np.searchsorted(np.array(AGE_BUCKETS), age, side="right"))
        fields["age_bucket"] = (bucket.astype(np.int64), len(AGE_BUCKETS) + 2)
    for c in ("occupation", "zip_region"):
        if c in uf:
            fields[c] = (uf[c][r.user], len(r.meta["categories"][c]))
    if "genre" in itf:
        fields["genre"] = (itf["genre"][r.item], len(r.meta["categories"]["genre"]))

    user_count = np.bincount(r.user, minlength=r.num_users)
    item_count = np.bincount(r.item, minlength=r.num_items)
    dense = {
        "timestamp": r.timestamp.astype(np.float64),
        "log_user_count": np.log1p(user_count[r.user]),
        "log_item_count": np.log1p(item_count[r.item]),
    }
    if "age" in uf:
        age = uf["age"][r.user].astype(np.float64)
        dense["age"] = np.where(age < 0, np.nan, age)
    if "release_year" in itf:
        dense["release_year"] = itf["release_year"][r.item]

    meta = {k: v for k, v in r.meta.items()}
    meta.update(
        field_names=list(fields), dense_names=list(dense), num_users=r.num_users, num_items=r.num_items,
        label_rule=f"rating >= {threshold}", dense_norm={"dense": _norm_stats(dense)},
    )  # fmt: skip
    return Dataset(
        name="movielens-100k-ctr",
        task="ctr",
        inputs={
            "dense": np.stack([_standardize(v) for v in dense.values()], 1),
            "sparse": np.stack([v for v, _ in fields.values()], 1).astype(np.int64),
        },
        label=(r.rating >= threshold).astype(np.float32),
        vocab={"sparse": [int(size) for _, size in fields.values()]},
        meta=meta,
    )


@dataclass
class RetrievalData:
    """Leave-last-out split: train positives, and each user's last interaction as test."""

    train: Dataset
    test_user: np.ndarray
    test_item: np.ndarray
    num_users: int
    num_items: int
    train_items_by_user: list[np.ndarray]
    meta: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.train.name


def leave_last_out(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray, num_users: int, num_items: int,
                   name: str = "retrieval", meta: dict | None = None) -> RetrievalData:  # fmt: skip
    """Hold out each user's latest interaction (ties broken by file order).

    Users with a single interaction keep it in train and get no test pair.
    """
    order = np.lexsort((np.arange(len(user)), timestamp, user))  # by user, then time, then row
    u_sorted = user[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = u_sorted[1:] != u_sorted[:-1]
    first = np.ones(len(order), dtype=bool)
    first[1:] = u_sorted[1:] != u_sorted[:-1]
    test_rows = order[last & ~first]  # last of users with >= 2 interactions
    is_test = np.zeros(len(user), dtype=bool)
    is_test[test_rows] = True
    train_rows = np.flatnonzero(~is_test)
    tu, ti = user[train_rows].astype(np.int64), item[train_rows].astype(np.int64)
    by_user_order = np.argsort(tu, kind="stable")
    splits = np.searchsorted(tu[by_user_order], np.arange(1, num_users))
    train_items = [np.unique(x) for x in np.split(ti[by_user_order], splits)]
    meta = dict(meta or {}, num_users=num_users, num_items=num_items)
    train = Dataset(
        name=name,
        task="retrieval",
        inputs={"user_id": tu, "item_id": ti},
        label=np.ones(len(train_rows), dtype=np.float32),
        vocab={"user_id": [num_users], "item_id": [num_items]},
        meta=meta,
    )
    test_user = user[test_rows].astype(np.int64)
    by = np.argsort(test_user, kind="stable")
    return RetrievalData(train, test_user[by], item[test_rows].astype(np.int64)[by], num_users, num_items,
                         train_items, meta)  # fmt: skip


def movielens_retrieval(path=None, cache_dir=None) -> RetrievalData:
    """Retrieval view: train positives ``{"user_id", "item_id"}``, each user's last rating held out."""
    r = load_movielens(path, cache_dir)
    meta = {k: r.meta[k] for k in ("source", "user_ids", "item_ids")}
    return leave_last_out(r.user, r.item, r.timestamp, r.num_users, r.num_items, "movielens-100k-retrieval", meta)
