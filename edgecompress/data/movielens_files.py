"""Reading MovieLens-100k files: the RecBole wheel (fetched once into a cache), a GroupLens
folder or zip, or a RecBole ``.inter`` file, with the side files next to it
(``data/movielens.py`` turns them into ratings and views)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from edgecompress.errors import DataError

RECBOLE_VERSION = "1.2.1"
_WHEEL_DIR = "recbole/dataset_example/ml-100k/"
_HOW = (
    "pass path= the GroupLens u.data (or its folder / ml-100k.zip) or a RecBole .inter file, "
    "or fix network access to PyPI"
)
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
AGE_BUCKETS = (18, 25, 35, 45, 50, 56)  # MovieLens-1M style bucket edges


def default_cache_dir() -> Path:
    """``$EDGECOMPRESS_CACHE`` if set, else ``~/.cache/edgecompress/wheels``."""
    env = os.environ.get("EDGECOMPRESS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgecompress" / "wheels"


def recbole_wheel(cache_dir=None) -> Path:
    """Path of the cached RecBole wheel; downloads it with ``pip download`` if missing."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    pattern = f"recbole-{RECBOLE_VERSION}-*.whl"
    found = sorted(cache.glob(pattern)) if cache.is_dir() else []
    if found:
        return found[0]
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the cache folder {cache} ({exc}); pass cache_dir= a writable folder") from exc
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           f"recbole=={RECBOLE_VERSION}", "-d", str(cache)]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"could not download MovieLens-100k ({' '.join(cmd)} failed: {exc}); {_HOW}") from exc
    found = sorted(cache.glob(pattern))
    if proc.returncode != 0 or not found:
        tail = " ".join((proc.stderr or proc.stdout or "").strip().splitlines()[-2:])
        raise DataError(
            f"could not download MovieLens-100k: `pip download recbole=={RECBOLE_VERSION}` into {cache} "
            f"failed (exit {proc.returncode}: {tail}); {_HOW}"
        )
    return found[0]


# ----------------------------------------------------------------------------- reading files


class _Files:
    """Text files of one MovieLens copy, in a folder or inside a zip/wheel."""

    def __init__(self, where: str, folder: Path | None = None, zf: zipfile.ZipFile | None = None, prefix: str = ""):
        self.where, self.folder, self.zf, self.prefix = where, folder, zf, prefix

    def read(self, name: str) -> str | None:
        try:
            if self.zf is not None:
                data = self.zf.read(self.prefix + name)
            else:
                data = (self.folder / name).read_bytes()
        except (KeyError, FileNotFoundError, IsADirectoryError):
            return None
        except OSError as exc:
            raise DataError(f"cannot read {name} from {self.where}: {exc}") from exc
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")  # GroupLens u.item is latin-1

    def close(self) -> None:
        if self.zf is not None:
            self.zf.close()


def open_files(path, cache_dir) -> tuple[_Files, str]:
    """Locate the ratings file; returns (files, ratings file name)."""
    if path is None:
        wheel = recbole_wheel(cache_dir)
        return _open_zip(wheel, prefer=_WHEEL_DIR)
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"MovieLens file {p} does not exist; {_HOW}, or pass path=None to fetch it from PyPI")
    if p.is_dir():
        for cand in ["u.data", *sorted(x.name for x in p.glob("*.inter"))]:
            if (p / cand).is_file():
                return _Files(str(p), folder=p), cand
        raise DataError(f"folder {p} holds neither u.data nor a .inter file; {_HOW}")
    if zipfile.is_zipfile(p):
        return _open_zip(p, prefer="")
    return _Files(str(p), folder=p.parent), p.name


def _open_zip(p: Path, prefer: str) -> tuple[_Files, str]:
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{p} is not a readable zip/wheel ({exc}); delete it (it is re-downloaded) or {_HOW}") from exc
    names = zf.namelist()
    cands = [n for n in names if n.startswith(prefer) and (n.endswith("/u.data") or n.endswith(".inter"))]
    if not cands:
        raise DataError(f"{p} contains no MovieLens ratings file (u.data or *.inter under {prefer or '/'}); {_HOW}")
    member = sorted(cands, key=lambda n: ("ml-100k" not in n, len(n)))[0]
    prefix, _, name = member.rpartition("/")
    return _Files(f"{p}:{prefix}", zf=zf, prefix=prefix + "/" if prefix else ""), name


def _rows(text: str, sep: str) -> list[list[str]]:
    return [line.rstrip("\r").split(sep) for line in text.split("\n") if line.strip()]


def _header(rows: list[list[str]]) -> tuple[dict[str, int] | None, list[list[str]]]:
    """RecBole files start with a ``name:type`` header; GroupLens files have none."""
    if rows and all(":" in c for c in rows[0]):
        return {c.split(":", 1)[0].strip(): i for i, c in enumerate(rows[0])}, rows[1:]
    return None, rows


def read_ratings(files: _Files, name: str):
    text = files.read(name)
    where = f"{files.where}/{name}"
    if text is None:
        raise DataError(f"MovieLens ratings file {where} not found; {_HOW}")
    rows = _rows(text, "\t")
    head, rows = _header(rows)
    cols = {"user_id": 0, "item_id": 1, "rating": 2, "timestamp": 3}
    if head is not None:
        missing = [c for c in cols if c not in head]
        if missing:
            raise DataError(f"{where}: header lacks column(s) {missing}; expected user_id, item_id, rating, timestamp")
        cols = {c: head[c] for c in cols}
    if not rows:
        raise DataError(f"{where} holds no ratings; {_HOW}")
    width = max(cols.values()) + 1
    for i, r in enumerate(rows):
        if len(r) < width:
            raise DataError(
                f"{where}: line {i + 1 + (head is not None)} has {len(r)} tab-separated column(s), expected "
                f"user, item, rating, timestamp: {chr(9).join(r)[:80]!r}"
            )
    cells = {c: [r[j].strip() for r in rows] for c, j in cols.items()}
    try:
        rating = np.array(cells["rating"], dtype=np.float32)
        timestamp = np.array(cells["timestamp"], dtype=np.float64).astype(np.int64)
    except ValueError as exc:
        raise DataError(f"{where}: rating/timestamp column is not numeric ({exc})") from exc
    return cells["user_id"], cells["item_id"], rating, timestamp, head is not None


def dense_ids(tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Re-index raw id tokens to 0..n-1; returns (dense ids, raw id per dense id)."""
    arr = np.array(tokens)
    try:
        arr = arr.astype(np.int64)  # numeric ids sort numerically: raw 1 -> 0, 2 -> 1, ...
    except ValueError:
        pass
    raw, dense = np.unique(arr, return_inverse=True)
    return dense.astype(np.int64).reshape(-1), raw


def _lookup(raw_ids: np.ndarray, tokens: list[str]) -> np.ndarray:
    """Dense id for each side-file token (-1 if the id has no rating)."""
    arr = np.array(tokens)
    if raw_ids.dtype.kind in "iu":
        try:
            arr = arr.astype(np.int64)
        except ValueError:
            return np.full(len(tokens), -1)
    pos = np.searchsorted(raw_ids, arr).clip(0, len(raw_ids) - 1)
    return np.where(raw_ids[pos] == arr, pos, -1)


def _codes(values: list[str]) -> tuple[np.ndarray, list[str]]:
    """Categorical strings -> codes 1..K (0 is kept for 'unknown / no side data')."""
    labels = sorted(set(values))
    index = {v: i + 1 for i, v in enumerate(labels)}
    return np.array([index[v] for v in values], dtype=np.int64), ["<unknown>", *labels]


def read_users(files: _Files, grouplens: bool, stem: str, raw_users: np.ndarray, meta: dict) -> dict:
    text = files.read("u.user" if grouplens else f"{stem}.user")
    if text is None:
        return {}
    rows = _rows(text, "|" if grouplens else "\t")
    head, rows = _header(rows)
    cols = {"user_id": 0, "age": 1, "gender": 2, "occupation": 3, "zip_code": 4}
    if head is not None:
        cols = {c: head[c] for c in cols if c in head}
    if "user_id" not in cols or not rows:
        return {}
    rows = [r for r in rows if len(r) > max(cols.values())]
    idx = _lookup(raw_users, [r[cols["user_id"]].strip() for r in rows])
    keep = idx >= 0
    n = len(raw_users)
    out: dict[str, np.ndarray] = {}
    if "age" in cols:
        age = np.full(n, -1, dtype=np.int64)
        vals = []
        for r in rows:
            try:
                vals.append(int(float(r[cols["age"]])))
            except ValueError:
                vals.append(-1)
        age[idx[keep]] = np.array(vals, dtype=np.int64)[keep]
        out["age"] = age
    for c in ("gender", "occupation"):
        if c in cols:
            codes, labels = _codes([r[cols[c]].strip() for r in rows])
            full = np.zeros(n, dtype=np.int64)
            full[idx[keep]] = codes[keep]
            out[c] = full
            meta.setdefault("categories", {})[c] = labels
    if "zip_code" in cols:  # first digit: coarse US region
        first = [r[cols["zip_code"]].strip()[:1] or "?" for r in rows]
        codes, labels = _codes([d if d.isdigit() else "other" for d in first])
        full = np.zeros(n, dtype=np.int64)
        full[idx[keep]] = codes[keep]
        out["zip_region"] = full
        meta.setdefault("categories", {})["zip_region"] = labels
    return out


def read_items(files: _Files, grouplens: bool, stem: str, raw_items: np.ndarray, meta: dict) -> dict:
    text = files.read("u.item" if grouplens else f"{stem}.item")
    if text is None:
        return {}
    n = len(raw_items)
    genres = np.zeros((n, len(GENRES)), dtype=bool)
    year = np.full(n, np.nan, dtype=np.float32)
    if grouplens:  # id|title|release date|video date|url|19 genre flags
        rows = [r for r in _rows(text, "|") if len(r) >= 5 + len(GENRES)]
        ids, years, flags = [r[0] for r in rows], [r[2][-4:] for r in rows], [r[-len(GENRES):] for r in rows]
        gmat = np.array([[f.strip() == "1" for f in fl] for fl in flags], dtype=bool).reshape(-1, len(GENRES))
    else:  # RecBole: item_id, movie_title, release_year, class (space-separated genres)
        head, rows = _header(_rows(text, "\t"))
        if head is None or "item_id" not in head:
            return {}
        rows = [r for r in rows if len(r) > max(head.values())]
        ids = [r[head["item_id"]] for r in rows]
        years = [r[head["release_year"]] for r in rows] if "release_year" in head else ["" for _ in rows]
        gmat = np.zeros((len(rows), len(GENRES)), dtype=bool)
        if "class" in head:
            gi = {g: i for i, g in enumerate(GENRES)}
            for k, r in enumerate(rows):
                for g in r[head["class"]].split():
                    if g in gi:
                        gmat[k, gi[g]] = True
    if not ids:
        return {}
    idx = _lookup(raw_items, [i.strip() for i in ids])
    keep = idx >= 0
    yr = np.array([float(y) if y.strip().isdigit() else np.nan for y in years], dtype=np.float32)
    year[idx[keep]] = yr[keep]
    genres[idx[keep]] = gmat[keep]
    # first real genre in GroupLens order; 1 = only 'unknown'; 0 = item has no side data
    real = genres[:, 1:]
    first = np.where(real.any(1), 2 + np.argmax(real, 1), np.where(genres[:, 0], 1, 0))
    meta.setdefault("categories", {})["genre"] = ["<none>", *GENRES]
    return {"release_year": year, "genres": genres, "genre": first.astype(np.int64)}
