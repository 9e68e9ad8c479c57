"""The farm's record: the report dict (per device, per bundle, per job and a
summary; schema ``edgecompress.farm/1``) and ``farm.json``, rewritten atomically
after every job so nothing finished is lost when the farm dies."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def build_report(farm) -> dict:
    devices = {}
    for n, d in farm.devices.items():
        mine = [j for j in farm.jobs if j.device == n]
        ran = [j for j in farm.jobs if j.ran_on == n and j.status == "ok"]
        devices[n] = {"address": d.spec, "target": d.target, "tags": list(d.tags),
                      "status": "down" if n in farm.down else "up", "error": farm.down.get(n),
                      "jobs_ok": sum(j.status == "ok" for j in ran),
                      "jobs_failed": sum(j.status == "failed" and j.ran_on == n for j in farm.jobs),
                      "jobs_moved_away": sum(j.ran_on != n and j.status == "ok" for j in mine),
                      "jobs_taken_over": sum(j.device != n for j in ran),
                      "facts": farm.facts.get(n, {})}
    bundles = {}
    for b in farm.bundles:
        try:
            size = os.path.getsize(b)
        except OSError:
            size = None
        bundles[b] = {"name": Path(b).name, "size_bytes": size}
    ok = sum(j.status == "ok" for j in farm.jobs)
    return {"schema": "edgecompress.farm/1", "started": farm.started, "finished": farm.finished,
            "wall_s": getattr(farm, "wall_s", None), "parallel": farm.parallel, "retries": farm.retries,
            "bench": farm.bench_kwargs, "devices": devices, "bundles": bundles,
            "jobs": [j.to_dict() for j in farm.jobs],
            "summary": {"jobs": len(farm.jobs), "ok": ok, "failed": len(farm.jobs) - ok,
                        "devices_down": sorted(farm.down)}}


def save_report(report: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = json.dumps(report, indent=1, default=str)
    fd, tmp = tempfile.mkstemp(prefix=".farm.", dir=out_dir)
    os.fchmod(fd, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(data)
    os.replace(tmp, out_dir / "farm.json")
