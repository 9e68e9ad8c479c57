"""The device farm: scheduling (retries, backoff, moving work within a target
profile) with scripted fake boards, then real sshd boards where one drops out."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from boards import free_port

from edgecompress.cli import main
from edgecompress.deploy.inventory import Device
from edgecompress.deploy.ssh_board import SSHBoard
from edgecompress import errors
from edgecompress.errors import AuthError, ConnectionLostError, ParityError
from edgecompress.farm import Farm, format_table
from edgecompress.farm.journal import load_report, replay
from edgecompress.report.farm_page import render_html


def _result(name, bundle, p50=0.1):
    lat = [{"batch": b, "p50_ms": p50 * b, "p90_ms": p50 * b * 1.2, "p99_ms": p50 * b * 1.5, "min_ms": p50 * b * 0.9,
            "mean_ms": p50 * b, "cv": 0.1, "iters": 10} for b in (1, 64)]
    return {"latency": lat, "parity": {"ok": True, "max_abs_diff": 1e-7}, "board": {"cpu_model": "fake"},
            "runs": [{"latency": lat}], "agreement": {"repeats": 1, "max_spread": 0.0}, "bundle": {"sha256": "x"}}


class FakeBoard:
    """Follows a script: a list of outcomes per call ('ok', or an exception to raise)."""

    def __init__(self, name, script, calls, delay=0.0):
        self.name, self.script, self.calls, self.delay = name, script, calls, delay

    def bench(self, bundle, **kw):
        self.calls.append((self.name, os.path.basename(bundle)))
        time.sleep(self.delay)
        outcome = self.script.pop(0) if self.script else "ok"
        if outcome != "ok":
            raise outcome
        return _result(self.name, bundle)

    def close(self):
        pass


def _farm(tmp_path, devices, scripts, bundles=("a.ecb", "b.ecb"), delay=0.0, **kw):
    calls = []
    for b in bundles:
        (tmp_path / b).write_bytes(b"x" * 1000)
    farm = Farm(devices, [str(tmp_path / b) for b in bundles], parallel=kw.pop("parallel", None),
                retries=kw.pop("retries", 2), backoff_s=kw.pop("backoff_s", 0.05), out_dir=tmp_path / "out",
                progress=lambda m: None,
                board_factory=lambda d: FakeBoard(d.name, scripts.setdefault(d.name, []), calls, delay), **kw)
    return farm, farm.run(), calls


def test_a_dropped_device_is_retried_then_its_work_moves_to_the_same_kind(tmp_path):
    devs = [Device("pi-1", "h1", target="raspberry-pi-4"), Device("pi-2", "h2", target="raspberry-pi-4"),
            Device("jetson", "h3", target="jetson-nano")]
    lost = ConnectionLostError("link dropped")
    scripts = {"pi-1": ["ok", lost, lost, lost]}                     # drops out after its first job
    farm, rep, calls = _farm(tmp_path, devs, scripts, retries=2)
    jobs = {(j["device"], os.path.basename(j["bundle"])): j for j in rep["jobs"]}
    assert all(j["status"] in ("ok", "moved") for j in rep["jobs"])    # nothing lost
    assert jobs[("pi-1", "a.ecb")]["ran_on"] == "pi-1"              # its finished work is kept
    moved = jobs[("pi-1", "b.ecb")]
    assert moved["ran_on"] == "pi-2" and moved["moved_from"] == ["pi-1"] and moved["attempts"] == 4
    assert moved["status"] == "moved"                    # issue 15 item 5: was "ok"; it ran elsewhere than planned
    assert [c for c in calls if c[0] == "pi-1"] == [("pi-1", "a.ecb")] + [("pi-1", "b.ecb")] * 3
    assert rep["devices"]["pi-1"]["status"] == "down" and rep["devices"]["pi-2"]["jobs_taken_over"] == 1
    assert sorted(c for c in calls if c[0] == "jetson") == [("jetson", "a.ecb"), ("jetson", "b.ecb")]
    on_disk = json.loads((tmp_path / "out" / "farm.json").read_text())
    assert on_disk["summary"] == rep["summary"] == {"jobs": 6, "ok": 5, "moved": 1, "failed": 0,  # issue 15 item 5
                                                    "devices_down": ["pi-1"]}


def test_permanent_failures_move_work_at_once_and_bundle_faults_stay_put(tmp_path):
    devs = [Device("a", "h1", target="raspberry-pi-4"), Device("b", "h2", target="raspberry-pi-4"),
            Device("solo", "h3")]
    parity = ParityError("outputs differ")
    scripts = {"a": [AuthError("refused")], "b": ["ok", parity], "solo": [AuthError("nope")]}
    farm, rep, calls = _farm(tmp_path, devs, scripts, retries=3)
    st = {(j["device"], os.path.basename(j["bundle"])): j for j in rep["jobs"]}
    assert [c for c in calls if c[0] == "a"] == [("a", "a.ecb")]          # auth: no retry
    assert rep["devices"]["a"]["status"] == "down" and rep["devices"]["b"]["status"] == "up"
    assert st[("a", "a.ecb")]["ran_on"] == "b" and st[("a", "a.ecb")]["status"] == "moved"   # issue 15: was "ok"
    failed = [j for j in rep["jobs"] if j["status"] == "failed"]
    assert {(j["device"], j["error"]["type"]) for j in failed} == {
        ("b", "ParityError"), ("solo", "AuthError")}                       # solo has no sibling to take over
    assert st[("solo", "b.ecb")]["status"] == "failed" and rep["summary"]["failed"] == 3
    table = format_table(rep)
    assert "AuthError" in table and "moved from a" in table


def test_devices_run_in_parallel(tmp_path):
    devs = [Device(f"d{i}", f"h{i}", target="raspberry-pi-4") for i in range(6)]
    farm, _, _ = _farm(tmp_path, devs, {}, bundles=("a.ecb",), delay=0.3)
    assert farm.wall_s < 1.2           # six 0.3 s jobs at once; the HTML page is drawn after the run


def test_html_report_is_self_contained(tmp_path):
    devs = [Device("pi-1", "h1", target="raspberry-pi-4"), Device("pi-2", "h2", target="raspberry-pi-4")]
    farm, rep, _ = _farm(tmp_path, devs, {"pi-2": [ParityError("<b>bad</b>")]})
    page = (tmp_path / "out" / "farm.html").read_text()
    assert page == render_html(json.loads((tmp_path / "out" / "farm.json").read_text()))
    assert page.count("<svg") == 3                                      # two batch sizes + size vs p90
    assert "<script" not in page and not re.search(r"(src|href)=", page)
    assert "&lt;b&gt;bad&lt;/b&gt;" in page and "<b>bad</b>" not in page
    assert "size vs p90" in page and "p50 of each repeat" in page and "log scale" in page


# ---------------------------------------------------------------------------- a driver that dies, resume, report

CHILD = """
import os, sys
sys.path.insert(0, {tests!r})
from test_farm import FakeBoard
from edgecompress.deploy.inventory import Device
from edgecompress.farm import Farm

class Calls(list):                       # every board call, on disk at once: the parent counts them
    def append(self, c):
        with open({calls!r}, "a") as f:
            f.write(" ".join(c) + chr(10))
devs = [Device(f"pi-{{i}}", f"h{{i}}", target="raspberry-pi-4") for i in range(3)]
Farm(devs, {bundles!r}, parallel=3, out_dir={out!r}, progress=None,
     board_factory=lambda d: FakeBoard(d.name, [], Calls(), 0.4)).run()
"""


def _journal_jobs(path):
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:          # the last line, being written
            continue
        if rec["type"] == "job":
            out.append(rec["job"])
    return out


def test_a_killed_driver_loses_only_jobs_in_flight_and_resume_runs_the_rest(tmp_path, capsys):
    bundles = [str(tmp_path / f"m{i}.ecb") for i in range(4)]
    for i, b in enumerate(bundles):
        Path(b).write_bytes(bytes([i]) * 1000)
    out, calls_file = tmp_path / "out", tmp_path / "calls.txt"
    code = CHILD.format(tests=str(Path(__file__).parent), calls=str(calls_file), bundles=bundles, out=str(out))
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while len(_journal_jobs(out / "farm.jsonl")) < 4:          # 12 jobs of 0.4 s, 3 at once
            assert child.poll() is None and time.monotonic() < deadline, "the farm ended before it was killed"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    done = {(j["device"], os.path.basename(j["bundle"])) for j in _journal_jobs(out / "farm.jsonl")}
    first_calls = calls_file.read_text().splitlines()
    assert 4 <= len(done) < 12 and len(first_calls) >= len(done)
    killed = load_report(out)                                      # the journal alone: what was done, what not
    assert killed["summary"]["ok"] == len(done) and killed["summary"]["unfinished"] == 12 - len(done)
    assert not (out / "farm.html").exists()
    assert main(["farm", "report", str(out)]) == 23                # a stopped run is not a clean one
    assert "never finished" in capsys.readouterr().err and (out / "farm.html").exists()

    devs = [Device(f"pi-{i}", f"h{i}", target="raspberry-pi-4") for i in range(3)]
    calls = []
    farm = Farm(devs, bundles, parallel=3, out_dir=out, progress=None, resume=out / "farm.json",
                board_factory=lambda d: FakeBoard(d.name, [], calls, 0.0))
    rep = farm.run()
    assert sorted(calls) == sorted({(f"pi-{i}", f"m{k}.ecb") for i in range(3) for k in range(4)} - done)
    assert len(calls) == 12 - len(done)                            # nothing finished runs twice
    assert rep["summary"] == {"jobs": 12, "ok": 12, "moved": 0, "failed": 0, "devices_down": []}
    assert {(j["device"], os.path.basename(j["bundle"])) for j in rep["jobs"] if j["resumed"]} == done
    saved = json.loads((out / "farm.json").read_text())
    assert saved == replay(out / "farm.jsonl") == load_report(out / "farm.json")   # snapshot == journal
    page = (out / "farm.html").read_text()
    assert page == render_html(saved)
    assert main(["farm", "report", str(out / "farm.json")]) == 0  # rebuilds the same table and page
    assert format_table(saved) in capsys.readouterr().out and (out / "farm.html").read_text() == page
    assert "from the run resumed" in format_table(saved)

    calls.clear()                                                  # resume of a finished run: nothing to do
    again = Farm(devs, bundles, out_dir=tmp_path / "again", progress=None, resume=out,
                 board_factory=lambda d: FakeBoard(d.name, [], calls, 0.0)).run()
    assert calls == [] and again["summary"]["ok"] == 12
    assert replay(tmp_path / "again" / "farm.jsonl") == json.loads((tmp_path / "again" / "farm.json").read_text())


def test_moved_jobs_and_down_devices_are_reported_with_their_own_exit_code(tmp_path, capsys):
    devs = [Device("pi-1", "h1", target="raspberry-pi-4"), Device("pi-2", "h2", target="raspberry-pi-4")]
    farm, rep, calls = _farm(tmp_path, devs, {"pi-1": [AuthError("key refused by pi-1")]})
    assert rep["summary"] == {"jobs": 4, "ok": 2, "moved": 2, "failed": 0, "devices_down": ["pi-1"]}
    moved = [j for j in rep["jobs"] if j["status"] == "moved"]
    assert {(j["device"], j["ran_on"], tuple(j["moved_from"])) for j in moved} == {("pi-1", "pi-2", ("pi-1",))}
    table = format_table(rep)
    assert "2 moved" in table and "down: pi-1: AuthError: key refused by pi-1" in table
    page = (tmp_path / "out" / "farm.html").read_text()
    assert "Devices down" in page and "key refused by pi-1" in page and "2 moved" in page
    assert main(["farm", "report", str(tmp_path / "out" / "farm.json")]) == 25
    assert "2 ran on another device than planned; devices down: pi-1" in capsys.readouterr().err
    assert errors.exit_code(errors.FarmMovedError("x")) == 25 and issubclass(errors.FarmMovedError, errors.FarmError)

    ok_dir = tmp_path / "ok"
    ok_dir.mkdir()
    _, ok, _ = _farm(ok_dir, devs, {})
    assert main(["farm", "report", str(ok_dir / "out")]) == 0 and ok["summary"]["moved"] == 0
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    _farm(bad_dir, devs, {"pi-1": [AuthError("a")], "pi-2": [ParityError("differs"), AuthError("b")]})
    assert main(["farm", "report", str(bad_dir / "out" / "farm.jsonl")]) == 23   # failures win over moves
    assert "failed" in capsys.readouterr().err
    assert main(["farm", "report", str(tmp_path / "nowhere")]) == 2
    assert main(["farm", "report", str(ok_dir / "out"), "--tags", "lab"]) == 2     # report runs nothing


# ---------------------------------------------------------------------------- real boards


def test_farm_on_real_boards_keeps_results_when_a_board_dies(board_factory, deploy_bundles, tmp_path):
    """Three sshd boards; board B's sshd dies while uploading its second bundle."""
    A, B, C = board_factory(), board_factory(), board_factory()
    devs = [A.device("A", target="local"), B.device("B", target="local"), C.device("C")]
    settings = A.settings(known_hosts=tuple(str(x.known_hosts) for x in (A, B, C)), connect_timeout=2)
    killed = []

    def factory(dev):
        def on_upload(name, sent, total):
            if dev.name == "B" and name == "int8.ecb" and not killed:
                killed.extend(B.kill_sessions())
                os.kill(B.sshd_pid, signal.SIGKILL)       # and the listener: reconnecting fails too
                killed.append(B.sshd_pid)
        return SSHBoard(dev, settings, sign=False, on_upload=on_upload)
    farm = Farm(devs, [deploy_bundles["fp32"], deploy_bundles["int8"]], settings, retries=1, backoff_s=0.2,
                out_dir=tmp_path / "farm", progress=print, board_factory=factory,
                bench_kwargs=dict(batches=(1, 16), warmup=2, iters=10))
    rep = farm.run()
    B.sshd_pid = None
    jobs = {(j["device"], os.path.basename(j["bundle"])): j for j in rep["jobs"]}
    assert killed and rep["devices"]["B"]["status"] == "down"
    assert jobs[("B", "fp32.ecb")]["status"] == "ok" and jobs[("B", "fp32.ecb")]["ran_on"] == "B"
    assert jobs[("B", "int8.ecb")]["ran_on"] == "A" and jobs[("B", "int8.ecb")]["status"] == "moved"  # was "ok"
    assert all(j["status"] in ("ok", "moved") for j in rep["jobs"]), format_table(rep)
    assert all(j["result"]["parity"]["ok"] for j in rep["jobs"])
    saved = json.loads((tmp_path / "farm" / "farm.json").read_text())
    assert saved["summary"]["ok"] + saved["summary"]["moved"] == 6 and saved["devices"]["B"]["error"]["type"] in (
        "ConnectionLostError", "UnreachableError")
    assert (tmp_path / "farm" / "farm.html").read_text().count("<svg") == 3


def test_farm_cli_with_an_unreachable_device_exits_23_and_keeps_the_rest(installed_board, tmp_path, capsys):
    b = installed_board["board"]
    inv = tmp_path / "devices.toml"
    inv.write_text(f"""
[ssh]
known_hosts = "{b.known_hosts}"
ssh_config = ""
connect_timeout = 2
[[device]]
name = "good"
host = "{b.host}"
port = {b.port}
user = "{b.user}"
identity_file = "{b.client_key}"
tags = ["lab"]
[[device]]
name = "gone"
host = "127.0.0.1"
port = {free_port()}
user = "nobody"
tags = ["lab"]
[[device]]
name = "skipped"
host = "127.0.0.1"
tags = ["other"]
""")
    out = tmp_path / "out"
    code = main(["farm", str(installed_board["bundle"]), "--inventory", str(inv), "--tags", "lab", "--no-sign",
                 "--retries", "1", "--backoff", "0.1", "--batch", "1", "--iters", "5", "--warmup", "1",
                 "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 23, captured.err
    assert "1 of 2 jobs failed; devices down: gone" in captured.err
    rep = json.loads((out / "farm.json").read_text())
    assert set(rep["devices"]) == {"good", "gone"}
    good = next(j for j in rep["jobs"] if j["device"] == "good")
    gone = next(j for j in rep["jobs"] if j["device"] == "gone")
    assert good["status"] == "ok" and good["result"]["parity"]["ok"]
    assert gone["status"] == "failed" and gone["error"]["type"] == "UnreachableError" and gone["attempts"] == 2
    assert "nothing is listening" in gone["error"]["message"]
    assert "good" in captured.out and "UnreachableError" in captured.out and (out / "farm.html").exists()
    # --resume through the CLI: the good board's job is done and not run again; the failed one is retried
    code = main(["farm", str(installed_board["bundle"]), "--inventory", str(inv), "--tags", "lab", "--no-sign",
                 "--retries", "0", "--batch", "1", "--iters", "5", "--warmup", "1", "--resume", str(out / "farm.json")])
    captured = capsys.readouterr()
    assert code == 23 and "1 job(s) done by the run resumed, not run again" in captured.out, captured.err
    again = json.loads((out / "farm.json").read_text())         # --out defaults to the resumed run's directory
    good2 = next(j for j in again["jobs"] if j["device"] == "good")
    assert good2["resumed"] and good2["result"] == good["result"]
    assert next(j for j in again["jobs"] if j["device"] == "gone")["attempts"] == 1
