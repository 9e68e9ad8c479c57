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
