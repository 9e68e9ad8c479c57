"""The farm's record: the report dict (per device, per bundle, per job and a
summary; schema ``edgecompress.farm/1``) and ``farm.json``, rewritten atomically
after every job. The report is built from plain parts (``report_from_parts``), so
the journal (``journal.py``) rebuilds the same dict without a ``Farm``.

A job's status: ``ok`` (ran on its planned board), ``moved`` (finished on another
board of the same kind: ``ran_on`` and ``moved_from`` say where), ``failed``."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

DONE = ("ok", "moved")          # statuses of a job that has its result


def bundle_info(path: str) -> dict:
    """Name, size and sha256 of a bundle file (None for what cannot be read)."""
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        size, sha = os.path.getsize(path), h.hexdigest()
    except OSError:
        size = sha = None
    return {"name": Path(path).name, "size_bytes": size, "sha256": sha}


def report_from_parts(meta: dict, devices: dict, bundles: dict, jobs: list[dict], down: dict,
                      facts: dict) -> dict:
    """The report: ``meta`` (started, finished, wall_s, parallel, retries, bench), ``devices``
    ({name: {address, target, tags}}), ``bundles`` ({path: bundle_info}), job dicts, the
    devices down ({name: error record}) and each device's facts."""
    devs = {}
    for n, d in devices.items():
        mine = [j for j in jobs if j["device"] == n]
        ran = [j for j in jobs if j.get("ran_on") == n and j["status"] in DONE]
        devs[n] = {"address": d["address"], "target": d["target"], "tags": list(d["tags"]),
                   "status": "down" if n in down else "up", "error": down.get(n),
                   "jobs_ok": len(ran),
                   "jobs_failed": sum(j["status"] == "failed" and j.get("ran_on") == n for j in jobs),
                   "jobs_moved_away": sum(j.get("ran_on") != n and j["status"] in DONE for j in mine),
                   "jobs_taken_over": sum(j["device"] != n for j in ran),
                   "facts": facts.get(n, {})}
    ok = sum(j["status"] == "ok" for j in jobs)
    moved = sum(j["status"] == "moved" for j in jobs)
    failed = sum(j["status"] == "failed" for j in jobs)
    summary = {"jobs": len(jobs), "ok": ok, "moved": moved, "failed": failed, "devices_down": sorted(down)}
    if len(jobs) > ok + moved + failed:          # a journal of a driver that died: never finished
        summary["unfinished"] = len(jobs) - ok - moved - failed
    return {"schema": "edgecompress.farm/1", "started": meta.get("started"), "finished": meta.get("finished"),
            "wall_s": meta.get("wall_s"), "parallel": meta.get("parallel"), "retries": meta.get("retries"),
            "bench": meta.get("bench", {}), "devices": devs, "bundles": bundles, "jobs": jobs,
            "summary": summary}


def build_report(farm) -> dict:
    meta = {"started": farm.started, "finished": farm.finished, "wall_s": getattr(farm, "wall_s", None),
            "parallel": farm.parallel, "retries": farm.retries, "bench": farm.bench_kwargs}
    return report_from_parts(meta, device_table(farm), farm.bundle_info, [j.to_dict() for j in farm.jobs],
                             farm.down, farm.facts)


def device_table(farm) -> dict:
    return {n: {"address": d.spec, "target": d.target, "tags": list(d.tags)} for n, d in farm.devices.items()}


def dumps(obj, **kw) -> str:
    return json.dumps(obj, default=str, **kw)


def save_report(report: dict, out_dir: Path) -> None:
    """farm.json, replaced atomically (written, fsync'ed, renamed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = dumps(report, indent=1)
    fd, tmp = tempfile.mkstemp(prefix=".farm.", dir=out_dir)
    os.fchmod(fd, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out_dir / "farm.json")
