"""``farm.jsonl``: the farm's append-only journal, so a killed driver loses at most
the jobs in flight. Line one is the plan (devices, bundles with their sha256, the
jobs, settings); then one line per finished job and per board that went down, each
written, flushed and fsync'ed before the farm moves on; the last line says the run
ended. ``farm.json`` (records.py) is the snapshot of the same record.

``load_report`` rebuilds the report dict from the journal alone (``edgecompress farm
report``); ``done_jobs`` says which (bundle sha256, device) jobs a ``--resume`` skips."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..errors import EdgecompressError
from .records import DONE, bundle_info, dumps, report_from_parts

JOURNAL = "farm.jsonl"
SCHEMA = "edgecompress.farm-journal/1"


class Journal:
    """Starts ``out_dir/farm.jsonl`` anew (header + jobs carried over from a resumed run,
    replaced atomically), then appends one fsync'ed line per record."""

    def __init__(self, out_dir: Path, header: dict, carried: list[dict]):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / JOURNAL
        fd, tmp = tempfile.mkstemp(prefix=".farm.", suffix=".jsonl", dir=out_dir)
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(dumps({"type": "farm", "schema": SCHEMA, **header}) + "\n")
            for job in carried:
                f.write(dumps({"type": "job", "job": job}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.f = open(self.path, "a")

    def append(self, record: dict) -> None:
        self.f.write(dumps(record) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


def _read(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:      # the driver died while writing it: that job was in flight
                break
            raise EdgecompressError(f"{path}: line {i + 1} is not JSON") from None
    if not out or out[0].get("type") != "farm" or out[0].get("schema") != SCHEMA:
        raise EdgecompressError(f"{path} is not a farm journal (schema {SCHEMA})")
    return out


def replay(path: Path) -> dict:
    """The report dict from a journal. Jobs it has no line for (in flight or never
    started when the driver died) are listed as ``pending``."""
    recs = _read(path)
    head = recs[0]
    meta = dict(head["meta"])
    jobs = {j["id"]: dict(j, status="pending") for j in head["jobs"]}
    down, facts = {}, {}
    for r in recs[1:]:
        if r["type"] == "job":
            j = r["job"]
            jobs[j["id"]] = j
            if j["status"] in DONE and j.get("ran_on"):
                facts[j["ran_on"]] = (j.get("result") or {}).get("board", {})
        elif r["type"] == "down":
            down[r["name"]] = r["error"]
        elif r["type"] == "end":
            meta.update(finished=r["finished"], wall_s=r["wall_s"])
    return report_from_parts(meta, head["devices"], head["bundles"], [jobs[i] for i in sorted(jobs)], down,
                             facts)


def source(path) -> Path:
    """The file a farm record is read from: a directory's journal (else its farm.json);
    a farm.json's journal beside it when there is one (the snapshot can trail it by a job)."""
    p = Path(path)
    if p.is_dir():
        p = p / JOURNAL if (p / JOURNAL).exists() else p / "farm.json"
    elif p.suffix == ".json" and (p.parent / JOURNAL).exists():
        p = p.parent / JOURNAL
    if not p.is_file():
        raise EdgecompressError(f"no farm record at {path} (looked for {JOURNAL} and farm.json)")
    return p


def load_report(path) -> dict:
    """The report dict of a farm run from its farm.jsonl, farm.json or their directory."""
    p = source(path)
    if p.suffix == ".jsonl":
        return replay(p)
    try:
        rep = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise EdgecompressError(f"{p} is not JSON: {e}") from None
    if not isinstance(rep, dict) or rep.get("schema") != "edgecompress.farm/1":
        raise EdgecompressError(f"{p} is not a farm report (schema edgecompress.farm/1)")
    return rep


def done_jobs(path) -> dict[tuple[str, str], dict]:
    """{(bundle sha256, planned device): job record} of the jobs a run finished with a result."""
    rep = load_report(path)
    out = {}
    for j in rep["jobs"]:
        if j["status"] not in DONE:
            continue
        sha = j.get("bundle_sha256") or rep["bundles"].get(j["bundle"], {}).get("sha256") \
            or bundle_info(j["bundle"])["sha256"]
        if sha:
            out[(sha, j["device"])] = j
    return out
