"""The programs the host runs on a board (edgecompress_runtime/board/), each run here
in-process on a scratch directory standing in for the board's work directory; the
sshd-board tests (test_deploy_board.py, test_deploy_faults.py) run them for real."""
from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from edgecompress_runtime import board
from edgecompress_runtime.board import bench_run, facts, install, probe, prune, trust_key, verify_move

BY_SOURCE = ("probe", "install", "verify_move", "trust_key", "prune", "facts")


def _stdout_json(fn, *args):
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = fn(*args)
    return rc, json.loads(buf.getvalue().strip().splitlines()[-1])


@pytest.mark.parametrize("name", BY_SOURCE)
def test_programs_sent_as_source_use_the_standard_library_only(name):
    """They run with the board's own Python before the runtime exists: no import of our packages
    (or numpy), and a __main__ entry so `python -c SOURCE ARG` runs them."""
    tree = ast.parse(board.source(name))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not imported & {"edgecompress", "edgecompress_runtime", "numpy", ""}, imported
    assert 'if __name__ == "__main__":' in board.source(name)
    with pytest.raises(ValueError, match="no board program"):
        board.source("rm_rf")


def test_probe_creates_the_layout_and_removes_dead_sessions_staging(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    work = tmp_path / ".ec"
    (work / ".incoming").mkdir(parents=True)
    (work / ".incoming" / "999999999.ab12.numpy.whl.part").write_bytes(b"half")   # a session that died
    (work / ".incoming" / "4194305.ab12.build-x").mkdir()
    (work / ".current.1.ab").symlink_to("versions/gone")
    (work / "versions" / "v1").mkdir(parents=True)
    (work / "versions" / "v1" / "version.json").write_text("{}")
    (work / "versions" / "half").mkdir()                                          # no version.json: not a version
    (work / "current").symlink_to("versions/v1")
    (work / "blobs").mkdir()
    (work / "blobs" / "abc").write_bytes(b"w")
    raw = os.urandom(32)
    tdir = tmp_path / ".config" / "trust"
    tdir.mkdir(parents=True)
    (tdir / "k.pub").write_text("ssh-ed25519 " + base64.b64encode(raw).decode() + " edgecompress key\n")
    (tdir / "bad.pub").write_text("garbage")
    state = probe.probe({"workdir": ".ec", "check": ["blobs/abc", "blobs/missing"], "trust_dir": ".config/trust"})
    assert state["work"] == str(work) and state["home"] == str(tmp_path)
    assert sorted(state["cleaned"]) == ["4194305.ab12.build-x", "999999999.ab12.numpy.whl.part"]
    assert os.listdir(work / ".incoming") == [] and not os.path.lexists(work / ".current.1.ab")
    assert {p.name for p in work.iterdir()} >= {"blobs", "bundles", "versions", ".incoming", "current"}
    assert state["current"] == "v1" and state["versions"] == ["v1"] and state["have"] == ["blobs/abc"]
    assert state["trusted"] == {hashlib.sha256(raw).hexdigest()[:16]: "k.pub", "unreadable:bad.pub": "bad.pub"}
    assert state["python"] == ".".join(map(str, sys.version_info[:3])) and state["free_bytes"] > 0
    assert state["machine"] and len(state["libc"]) == 2


def test_probe_reports_a_work_directory_it_cannot_create(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "file").write_text("")
    assert probe.probe({"workdir": "file/ec", "trust_dir": "t"})["error"] == "mkdir"


def test_probe_runs_as_source_with_a_plain_interpreter(tmp_path):
    """What the installer does on a board: `python3 -c SOURCE ARG`, outside any venv of ours."""
    arg = json.dumps({"workdir": str(tmp_path / "w"), "check": [], "trust_dir": str(tmp_path / "t")})
    r = subprocess.run([sys.executable, "-I", "-c", board.source("probe"), arg], capture_output=True, text=True,
                       env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["work"] == str(tmp_path / "w") and (tmp_path / "w" / "blobs").is_dir()


def test_verify_move_renames_matching_uploads_and_deletes_corrupt_ones(tmp_path, capsys):
    good, bad = tmp_path / "good.part", tmp_path / "bad.part"
    good.write_bytes(b"wheel")
    bad.write_bytes(b"flipped")
    os.chmod(good, 0o600)
    sha = hashlib.sha256(b"wheel").hexdigest()
    assert verify_move.main([json.dumps({"items": [[str(good), sha, str(tmp_path / "blob")]]})]) == 0
    assert (tmp_path / "blob").read_bytes() == b"wheel" and not good.exists()
    assert (tmp_path / "blob").stat().st_mode & 0o777 == 0o644
    assert verify_move.verify_move([[str(bad), sha, str(tmp_path / "blob2")]]) == verify_move.CORRUPT == 3
    assert not bad.exists() and not (tmp_path / "blob2").exists()
    assert f"sha256 mismatch for {tmp_path / 'blob2'}: expected {sha}" in capsys.readouterr().err
    good.write_bytes(b"wheel")
    assert verify_move.verify_move([[str(good), sha, str(tmp_path / "no" / "dir")]]) == verify_move.MOVE_FAILED
    assert not good.exists()


def test_trust_key_moves_the_key_into_a_private_directory(tmp_path):
    part = tmp_path / "k.pub.part"
    part.write_text("ssh-ed25519 AAAA key\n")
    rc, out = _stdout_json(trust_key.main, [json.dumps({"dir": str(tmp_path / "keys"), "name": "k.pub",
                                                        "part": str(part)})])
    assert rc == 0 and out == {"ok": True}
    assert (tmp_path / "keys" / "k.pub").read_text() == "ssh-ed25519 AAAA key\n" and not part.exists()
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700


def test_prune_keeps_the_newest_bundles_and_the_protected_one(tmp_path):
    d = tmp_path / "bundles"
    d.mkdir()
    now = time.time()
    for i, name in enumerate(["old.ecb", "mid.ecb", "new.ecb"]):
        (d / name).write_bytes(b"x")
        os.utime(d / name, (now - 100 + 10 * i, now - 100 + 10 * i))
    (d / "note.txt").write_text("not a bundle")
    rc, gone = _stdout_json(prune.main, [json.dumps({"work": str(tmp_path), "keep": 1, "protect": ["old.ecb"]})])
    assert rc == 0 and gone == ["mid.ecb"]
    assert sorted(p.name for p in d.iterdir()) == ["new.ecb", "note.txt", "old.ecb"]


def _fake_version(work: Path, vid: str, wheels, age_s: float) -> None:
    v = work / "versions" / vid
    (v / "venv" / "bin").mkdir(parents=True)
    py = v / "venv" / "bin" / "python"          # this interpreter: it imports numpy and the runtime, smoke passes
    py.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    py.chmod(0o755)
    (v / "version.json").write_text(json.dumps({"id": vid, "wheels": wheels}))
    t = time.time() - age_s
    os.utime(v / "version.json", (t, t))


def test_install_of_a_version_already_there_switches_and_collects(tmp_path):
    work = tmp_path / "w"
    for d in ("blobs", "bundles", ".incoming"):
        (work / d).mkdir(parents=True)
    for sha in ("s-old", "s-prev", "s-new", "s-stray"):
        (work / "blobs" / sha).write_bytes(b"w")
    _fake_version(work, "old", [["a.whl", "s-old"]], 300)
    _fake_version(work, "prev", [["a.whl", "s-prev"]], 200)
    _fake_version(work, "new", [["a.whl", "s-new"]], 100)
    out = install.install({"work": str(work), "vid": "new", "python": sys.executable, "pid": 1, "token": "t",
                           "wheels": [["a.whl", "s-new"]], "requirements": [], "offline": True,
                           "python_version": "3", "keep_versions": 2})
    assert "error" not in out and out["installed"] is False and out["removed_versions"] == ["old"]
    assert os.readlink(work / "current") == "versions/new"
    assert sorted(p.name for p in (work / "versions").iterdir()) == ["new", "prev"]
    assert sorted(p.name for p in (work / "blobs").iterdir()) == ["s-new", "s-prev"]
    wrapper = work / "bin" / "edgecompress-runtime"
    assert wrapper.read_text() == install.WRAPPER and os.access(wrapper, os.X_OK)
    r = subprocess.run([str(wrapper), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "bench" in r.stdout


def test_a_failed_install_leaves_the_previous_one_current(tmp_path):
    work = tmp_path / "w"
    for d in ("blobs", "bundles", ".incoming"):
        (work / d).mkdir(parents=True)
    _fake_version(work, "prev", [], 100)
    install.switch_current(str(work), "prev", 1, "t")
    out = install.install({"work": str(work), "vid": "next", "python": str(tmp_path / "no-python"), "pid": 7,
                           "token": "t", "wheels": [], "requirements": ["numpy"], "offline": True,
                           "python_version": "3", "keep_versions": 2})
    assert out["error"] == "venv" and "no-python" in out["detail"] and not out["enospc"]
    assert os.readlink(work / "current") == "versions/prev"
    assert os.listdir(work / ".incoming") == [] and not (work / "versions" / "next").exists()


def test_facts_describe_the_machine():
    f = facts.facts(full=True)
    for k in ("uname", "cpu_model", "cores", "governors", "temperatures_c", "python", "packages", "kernel",
              "loadavg", "mem_total_mb"):
        assert k in f, k
    assert f["packages"]["numpy"] and f["cores"] >= 1 and f["python_executable"] == sys.executable
    rc, temps = _stdout_json(facts.main, ["temps"])
    assert rc == 0 and set(temps) == {"temperatures_c", "loadavg", "cur_mhz"}


def test_bench_run_wraps_the_runtime_bench_with_facts(bundles, tmp_path, capsys):
    args = {"bundle": str(bundles["fp32"].path), "batch": "1,8", "warmup": 1, "iters": 5, "backend": "numpy",
            "json": str(tmp_path / "out.json"), "min_seconds": 0, "facts": True}
    out = bench_run.run(args)
    assert out["rc"] == 0 and not (tmp_path / "out.json").exists()      # read back, then removed
    res = out["result"]
    assert [r["batch"] for r in res["latency"]] == [1, 8] and res["parity"]["ok"]
    assert "uname" in out["before"] and set(out["after"]) == {"temperatures_c", "loadavg", "cur_mhz"}
    assert capsys.readouterr().out == ""         # the runtime's table went to stderr: stdout is ours
    rc, line = _stdout_json(bench_run.main, [json.dumps({**args, "bundle": str(tmp_path / "missing.ecb"),
                                                         "facts": False})])
    assert rc == 0 and line["rc"] != 0 and line["result"] is None and "uname" not in line["before"]


# ---------------------------------------------------------------------------- concurrent deploys (issue 13)

def _hold_lock(work: Path, seconds: float = 60) -> subprocess.Popen:
    """A real process holding the board's install lock (as another deploy's install would)."""
    code = ("import sys, time; from edgecompress_runtime.board.install import board_lock\n"
            "with board_lock(sys.argv[1], 5, 'installing runtime other', 'laptop pid 42'):\n"
            "    print('held', flush=True); time.sleep(float(sys.argv[2]))\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(work), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_install_waits_for_the_board_lock_and_names_its_holder(tmp_path):
    work = tmp_path / "w"
    for d in ("blobs", "bundles", ".incoming"):
        (work / d).mkdir(parents=True)
    _fake_version(work, "v1", [], 100)
    arg = {"work": str(work), "vid": "v1", "python": sys.executable, "pid": 1, "token": "t", "wheels": [],
           "requirements": [], "offline": True, "python_version": "3", "keep_versions": 2, "lock_timeout": 0.4}
    holder = _hold_lock(work)
    try:
        t0 = time.monotonic()
        out = install.install(arg)
        waited = time.monotonic() - t0
        assert out["error"] == "lock" and 0.4 <= waited < 5 and out["waited_s"] >= 0.4
        h = out["holder"]
        assert h["pid"] == holder.pid and h["client"] == "laptop pid 42" and h["what"] == "installing runtime other"
        assert abs(h["since"] - time.time()) < 60 and h["host"]
        assert not (work / "current").exists()                  # nothing was changed
        # the holder waits its turn too: a second taker times out while the first one holds it
        with pytest.raises(install.LockBusy):
            with install.board_lock(str(work), 0.1, "x"):
                pass
    finally:
        holder.kill()          # a dead holder's lock is dropped by the kernel
        holder.wait()
    out = install.install({**arg, "lock_timeout": 5})
    assert "error" not in out and os.readlink(work / "current") == "versions/v1" and out["lock_wait_s"] < 5
    assert (work / ".lock").read_text() == ""                   # released: no holder recorded


def test_clean_up_keeps_pinned_current_and_running_versions(tmp_path):
    import shutil
    work = tmp_path / "w"
    for d in ("blobs", "bundles", ".incoming"):
        (work / d).mkdir(parents=True)
    for i, vid in enumerate(["pinned", "deadpin", "running", "old", "cur", "new"]):
        _fake_version(work, vid, [["a.whl", f"s-{vid}"]], 600 - 100 * i)
        (work / "blobs" / f"s-{vid}").write_bytes(b"w")
    os.utime(work / "blobs" / "s-old", (time.time() - 7200, time.time() - 7200))
    install.switch_current(str(work), "cur", 1, "t")
    # a live SSH session (a process named sshd) pinned "pinned"; the session that pinned "deadpin" ended
    fake_sshd = tmp_path / "sshd"
    shutil.copy(shutil.which("sleep"), fake_sshd)
    session = subprocess.Popen([str(fake_sshd), "60"])
    # a process started from the "running" version's venv
    py = work / "versions" / "running" / "venv" / "bin" / "python"
    py.unlink()
    py.symlink_to(sys.executable)
    user = subprocess.Popen([str(py), "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        install.pin(str(work), "pinned", session.pid, "tok")
        install.pin(str(work), "deadpin", 999999999, "tok")
        assert install.pinned(str(work)) == {"pinned"}
        assert os.listdir(work / "pins") == [f"{session.pid}.tok.pinned"]        # the dead session's pin is gone
        install.pin(str(work), "deadpin", 999999999, "tok")
        removed = install.collect_garbage(str(work), "new", 1, blob_grace_s=3600)
        assert sorted(removed) == ["deadpin", "old"]
        assert sorted(p.name for p in (work / "versions").iterdir()) == ["cur", "new", "pinned", "running"]
        # wheels of removed versions go unless uploaded within the grace period (another deploy's)
        assert not (work / "blobs" / "s-old").exists() and (work / "blobs" / "s-deadpin").exists()
        # a new pin by the same session replaces its old one
        install.pin(str(work), "new", session.pid, "tok")
        assert install.pinned(str(work)) == {"new"}
    finally:
        for p in (session, user):
            p.kill()
            p.wait()
    # the session ended and the process exited: nothing keeps those two any more
    assert sorted(install.collect_garbage(str(work), "new", 1)) == ["pinned", "running"]
    assert sorted(p.name for p in (work / "versions").iterdir()) == ["cur", "new"]


def test_install_reports_wheels_another_deploy_removed(tmp_path):
    work = tmp_path / "w"
    for d in ("blobs", "bundles", ".incoming"):
        (work / d).mkdir(parents=True)
    (work / "blobs" / "s-here").write_bytes(b"w")
    os.utime(work / "blobs" / "s-here", (1, 1))
    out = install.install({"work": str(work), "vid": "v", "python": sys.executable, "pid": 1, "token": "t",
                           "wheels": [["a.whl", "s-here"], ["b.whl", "s-gone"]], "requirements": [],
                           "offline": True, "python_version": "3", "keep_versions": 2})
    assert out["error"] == "missing_blobs" and out["missing"] == ["s-gone"] and not out["enospc"]
    assert time.time() - (work / "blobs" / "s-here").stat().st_mtime < 60     # touched: kept by clean-ups
    assert not (work / "versions").exists() and os.listdir(work / ".incoming") == []


def test_prune_keeps_a_bundle_a_running_process_uses(tmp_path):
    d = tmp_path / "bundles"
    d.mkdir()
    now = time.time()
    for i, name in enumerate(["busy.ecb", "old.ecb", "new.ecb"]):
        (d / name).write_bytes(b"x")
        os.utime(d / name, (now - 100 + i, now - 100 + i))
    bench = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                              json.dumps({"bundle": str(d / "busy.ecb")})])
    try:
        time.sleep(0.1)
        assert prune.prune({"work": str(tmp_path), "keep": 1, "protect": []}) == ["old.ecb"]
    finally:
        bench.kill()
        bench.wait()
    assert prune.prune({"work": str(tmp_path), "keep": 1, "protect": []}) == ["busy.ecb"]
