"""The farm on a real Ray lab (``edgecompress lab start`` / ``farm --ray``): a head and three
lab hosts, each a Ray node started by ``ray start`` in its own network namespace, each
lab host reaching its own two sshd boards (one per profile) in namespaces no other
node can reach. A run over the 6 boards; the driver killed and resumed; a lab host
killed mid-run (its jobs move); a profile no node offers refused before any job."""
from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import pytest

from boards import is_root, netns_available
from ray_lab import RayLab

pytest.importorskip("ray", reason="Ray is the optional extra edgecompress[farm]")

KINDS = ["lab-x86-a", "lab-x86-b"]     # two profiles of x86 boards (the sshd boards are this machine's arch)
FAST = ["--no-sign", "--batch", "1", "--warmup", "1", "--iters", "5", "--cooldown", "0", "--min-seconds", "0",
        "--no-rerun", "--retries", "1", "--backoff", "0.2"]
# a killed lab host is declared dead by the head within ~3 s, not Ray's default ~30 s
HEALTH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "2",
          "RAY_health_check_timeout_ms": "1000", "RAY_health_check_initial_delay_ms": "1000"}


@pytest.fixture(scope="module")
def lab(sshd, tmp_path_factory):
    if not is_root() or not netns_available():
        pytest.skip("a Ray lab in network namespaces needs root and `ip netns`")
    lab = RayLab(tmp_path_factory.mktemp("ray-lab"), [KINDS, KINDS, KINDS],
                 env={**HEALTH, "EDGECOMPRESS_TARGETS": str(targets_with(tmp_path_factory.mktemp("targets"), KINDS))})
    lab.start()
    yield lab
    lab.stop()


def targets_with(d: Path, kinds) -> Path:
    """The project's target profiles plus ``kinds``: copies of ``local`` under other names."""
    from edgecompress.targets import targets_dir
    for p in targets_dir().glob("*.toml"):
        shutil.copy(p, d / p.name)
    local = (d / "local.toml").read_text()
    for k in kinds:
        (d / f"{k}.toml").write_text(local.replace('name = "local"', f'name = "{k}"', 1))
    return d


def _jobs(out: Path) -> list[dict]:
    lines = (out / "farm.jsonl").read_text().splitlines() if (out / "farm.jsonl").exists() else []
    recs = []
    for line in lines:
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return [r["job"] for r in recs if r.get("type") == "job"]


def _wait_jobs(proc, out: Path, n: int, timeout: float = 120) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        jobs = _jobs(out)
        if len(jobs) >= n:
            return jobs
        time.sleep(0.1)
    raise AssertionError(f"the farm did not finish {n} job(s) in time (exit {proc.poll()})")


def test_bad_input_is_refused_before_any_job_runs(lab, deploy_bundles, tmp_path):
    out = tmp_path / "out"
    r = lab.cli(0, "farm", deploy_bundles["fp32"], "--ray", lab.address, "--target", "lab-x86-a,coral", "--out", out,
                *FAST)
    assert r.returncode == 11, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "'coral'" in line and "the pool:" in line
    assert all(name in line for name in lab.boards)         # the pool, board by board
    assert not out.exists()                                 # refused before any job ran
    head = lab.hosts[0].ip
    r = lab.cli(0, "farm", deploy_bundles["fp32"], "--ray", f"{head}:1", "--out", out, *FAST)
    assert r.returncode == 12 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"{head}:1" in r.stderr and "edgecompress lab start" in r.stderr


def test_a_farm_run_over_six_boards_on_three_lab_hosts(lab, deploy_bundles, tmp_path):
    out = tmp_path / "out"
    r = lab.cli(0, "farm", deploy_bundles["fp32"], deploy_bundles["int8"], "--ray", lab.address, "--out", out,
                *FAST)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    rep = json.loads((out / "farm.json").read_text())
    assert rep["summary"] == {"jobs": 12, "ok": 12, "moved": 0, "failed": 0, "devices_down": []}
    assert set(rep["devices"]) == set(lab.boards)
    for j in rep["jobs"]:
        assert j["ran_on"] == j["device"] and j["result"]["parity"]["ok"], j
    # each board ran its own jobs: its sshd log shows the sessions, from its own lab host only
    for name, b in lab.boards.items():
        net, last = b.host.rsplit(".", 1)
        log = (b.root / "sshd.log").read_text()
        peers = {w.split()[0] for w in log.split("Accepted publickey for ")[1:] for w in [w.split(" from ")[1]]}
        assert peers == {f"{net}.{int(last) - 1}"}, (name, peers)     # the other end of its one link
    st = lab.cli(0, "lab", "status", "--address", lab.address, "--json", tmp_path / "st.json")
    assert st.returncode == 0, st.stderr
    status = json.loads((tmp_path / "st.json").read_text())
    assert sum(n["alive"] for n in status["nodes"]) == 4
    assert status["profiles"] == {k: {"boards": 3, "free": 3, "busy": 0} for k in KINDS}
    assert {n: b["target"] for n, b in status["boards"].items()} == {n: b.target for n, b in lab.boards.items()}
    assert "lab-x86-a: 3 board(s), 0 busy, 3 free" in st.stdout
    # the same table again from farm.json alone
    again = lab.cli(0, "farm", "report", out / "farm.json")
    assert again.returncode == 0 and "12/12 jobs ok" in again.stdout and "12/12 jobs ok" in r.stdout


def test_a_killed_driver_resumes_without_repeating_finished_jobs(lab, deploy_bundles, tmp_path):
    out = tmp_path / "out"
    slow = [a if a != "0" or FAST[i - 1] != "--min-seconds" else "1.0" for i, a in enumerate(FAST)]
    args = ["farm", deploy_bundles["fp32"], deploy_bundles["int8"], "--ray", lab.address, "--out", out, *slow]
    drv = lab.popen(0, *args, stdout=open(tmp_path / "drv1.log", "w"), stderr=open(tmp_path / "drv1.err", "w"))
    try:
        _wait_jobs(drv, out, 3)
        drv.send_signal(signal.SIGKILL)
        drv.wait(10)
    finally:
        if drv.poll() is None:
            drv.kill()
    done = {(j["device"], Path(j["bundle"]).name): j for j in _jobs(out) if j["status"] in ("ok", "moved")}
    assert 3 <= len(done) < 12
    shutil.copy(out / "farm.jsonl", tmp_path / "before.jsonl")
    r = lab.cli(0, *args[:-len(slow)], *FAST, "--resume", out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert f"{len(done)} job(s) done by the run resumed, not run again" in r.stdout
    rep = json.loads((out / "farm.json").read_text())
    assert rep["summary"]["ok"] == 12 and rep["summary"]["failed"] == 0
    for j in rep["jobs"]:
        key = (j["device"], Path(j["bundle"]).name)
        if key in done:                                     # carried over, not run again
            assert j["resumed"] and j["result"] == done[key]["result"], key
        else:
            assert not j["resumed"] and j["ran_on"] == j["device"], key


def test_a_lab_host_killed_mid_run_moves_its_jobs(lab, deploy_bundles, tmp_path):
    out = tmp_path / "out"
    slow = [a if a != "0" or FAST[i - 1] != "--min-seconds" else "1.5" for i, a in enumerate(FAST)]
    drv = lab.popen(0, "farm", deploy_bundles["fp32"], deploy_bundles["int8"], "--ray", lab.address,
                    "--out", out, *slow, stdout=open(tmp_path / "drv.log", "w"), stderr=open(tmp_path / "drv.err", "w"))
    victim = 3
    gone = sorted(n for n, i in lab.board_host.items() if i == victim)
    try:
        _wait_jobs(drv, out, 1)
        assert lab.kill_host(victim)
        code = drv.wait(240)
    finally:
        if drv.poll() is None:
            drv.kill()
    log = (tmp_path / "drv.log").read_text()
    assert code == 25, log[-3000:] + (tmp_path / "drv.err").read_text()
    rep = json.loads((out / "farm.json").read_text())
    s = rep["summary"]
    assert s["failed"] == 0 and s["ok"] + s["moved"] == 12 and s["moved"] >= 1
    assert s["devices_down"] == gone
    for j in rep["jobs"]:
        if j["status"] == "moved":
            assert j["device"] in gone and j["ran_on"] not in gone, j
            assert lab.boards[j["ran_on"]].target == lab.boards[j["device"]].target      # same kind
            assert j["moved_from"] and j["moved_from"][0] == j["device"]
    assert "QUARANTINED" in log
    st = lab.cli(0, "lab", "status", "--address", lab.address, "--json", tmp_path / "st.json")
    assert st.returncode == 0, st.stderr
    status = json.loads((tmp_path / "st.json").read_text())
    assert sum(n["alive"] for n in status["nodes"]) == 3
    assert status["profiles"] == {k: {"boards": 2, "free": 2, "busy": 0} for k in KINDS}
    assert sorted(status["gone"]) == gone and sorted(status["boards"]) == sorted(set(lab.boards) - set(gone))
    for name in gone:                     # the run told the lab why it dropped them
        q = status["gone"][name]["quarantined"]
        assert q and q["type"] in ("NodeDiedError", "NodeDied"), status["gone"][name]
        assert f"{name} ({lab.boards[name].target}" in st.stdout
    assert st.stdout.count("GONE (its node is not in the lab), QUARANTINED by the last run") == 2


def test_board_selection_refuses_what_the_pool_lacks_and_pins_one_board_per_profile():
    from edgecompress.errors import InventoryError
    from edgecompress.farm.ray_pool import select_boards
    pool = {f"{k}-{i}": {"name": f"{k}-{i}", "target": k, "address": f"u@10.0.0.{i}:22", "tags": ["lab"] * (i < 3)}
            for k in KINDS for i in (1, 2, 3)}
    assert [d.name for d in select_boards(pool, same_board=True)] == [f"{KINDS[0]}-1", f"{KINDS[1]}-1"]
    assert [d.name for d in select_boards(pool, targets=[KINDS[1]], tags=["lab"])] == [f"{KINDS[1]}-1",
                                                                                      f"{KINDS[1]}-2"]
    d = select_boards(pool, names=[f"{KINDS[0]}-3"])[0]
    assert (d.user, d.host, d.port, d.target) == ("u", "10.0.0.3", 22, KINDS[0])
    with pytest.raises(InventoryError, match=r"profile 'coral'.*the pool: lab-x86-a: lab-x86-a-1, lab-x86-a-2"):
        select_boards(pool, targets=["coral"])
    with pytest.raises(InventoryError, match="named 'nope'"):
        select_boards(pool, names=["nope"])
