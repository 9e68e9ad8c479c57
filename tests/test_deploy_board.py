"""Deploying to, and benchmarking on, real OpenSSH boards (tests/boards.py)."""
from __future__ import annotations

import json
import os
import time

import pytest
from boards import assert_previous_install_works, board_state, make_wheel, unique_bundle

from edgecompress.cli import main
from edgecompress.deploy.ssh_board import SSHBoard
from edgecompress.deploy.wheels import sha256_file
from edgecompress.errors import SignatureError


def test_cold_deploy_leaves_a_complete_versioned_install(installed_board):
    b, rep = installed_board["board"], installed_board["deploy"]
    assert rep["runtime"]["installed"] and rep["bundle_uploaded"] and not rep["signed"]
    st = assert_previous_install_works(b, rep["sha256"])
    assert st["current"] == f"versions/{rep['version']}"
    assert st["staging"] == []
    assert rep["remote_path"] == f"{b.workdir}/bundles/{rep['sha256']}.ecb"
    # everything belongs to the board's user, and the wrapper runs the current runtime
    import pwd
    uid = pwd.getpwnam(b.user).pw_uid
    assert all(p.stat().st_uid == uid for p in b.workdir.rglob("*") if not p.is_symlink())
    r = b.board_python("-c", "import subprocess, sys; sys.exit(subprocess.call([sys.argv[1], 'info', sys.argv[2]]))",
                       b.workdir / "bin" / "edgecompress-runtime", rep["remote_path"])
    assert r.returncode == 0 and "backend" in r.stdout, r.stderr
    # the board venv holds numpy and the runtime, nothing else
    r = b.board_python("-c", "import importlib.metadata as m, json; "
                             "print(json.dumps(sorted(d.metadata['Name'].lower() for d in m.distributions())))")
    assert json.loads(r.stdout) == ["edgecompress-runtime", "numpy"]


def test_bench_on_the_board_checks_parity_and_records_facts(installed_board):
    b = installed_board["board"]
    with SSHBoard(b.device(target="local"), b.settings(), sign=False) as sb:
        res = sb.bench(installed_board["bundle"], batches=(1, 16), warmup=2, iters=20, repeat=2, cooldown_s=0.1)
    assert res["parity"]["ok"] and res["bundle"]["sha256"] == installed_board["deploy"]["sha256"]
    assert [r["batch"] for r in res["latency"]] == [1, 16]
    f = res["board"]
    for k in ("uname", "cpu_model", "cores", "governors", "temperatures_c", "python", "packages", "kernel"):
        assert k in f, k
    assert f["packages"]["numpy"] and f["packages"]["edgecompress-runtime"] == "0.1.0"
    assert len(res["runs"]) == 2 and all("temps_before" in r and "temps_after" in r for r in res["runs"])
    a = res["agreement"]
    assert a["repeats"] == 2 and set(a["batches"]) == {"1", "16"} and "ok" in a
    assert res["device"] == {"name": f"board{b.index}", "address": b.spec, "target": "local", "tags": []}


def test_warm_redeploy_uploads_nothing(installed_board):
    b = installed_board["board"]
    t0 = time.perf_counter()
    with SSHBoard(b.device(), b.settings(), sign=False) as sb:
        rep = sb.deploy(installed_board["bundle"])
    took = time.perf_counter() - t0
    assert not rep["bundle_uploaded"] and not rep["runtime"]["installed"]
    assert rep["runtime"]["uploaded"] == [] and rep["runtime"]["uploaded_bytes"] == 0
    assert rep["version"] == installed_board["deploy"]["version"]
    assert took < 3.0, took


def test_a_bundle_pruned_on_the_board_is_uploaded_again(installed_board, tmp_path, monkeypatch):
    """The board keeps the newest KEEP_BUNDLES bundles; a session that deployed one the board
    has since removed must upload it again instead of trusting its cache."""
    import edgecompress.deploy.install as install
    monkeypatch.setattr(install, "KEEP_BUNDLES", 1)
    b = installed_board["board"]
    first = unique_bundle(installed_board["bundle"], tmp_path / "first.ecb", "prune-1")
    second = unique_bundle(installed_board["bundle"], tmp_path / "second.ecb", "prune-2")
    with SSHBoard(b.device(), b.settings(), sign=False) as sb:
        a = sb.deploy(first)
        assert a["bundle_uploaded"] and (b.workdir / "bundles" / f"{a['sha256']}.ecb").is_file()
        sb.deploy(second)                             # the board now drops the first one
        assert not (b.workdir / "bundles" / f"{a['sha256']}.ecb").exists()
        again = sb.deploy(first)
        assert again["bundle_uploaded"] and (b.workdir / "bundles" / f"{a['sha256']}.ecb").is_file()
        res = sb.bench(first, batches=(1,), warmup=1, iters=3)
    assert res["parity"]["ok"] and res["bundle"]["sha256"] == a["sha256"]
    monkeypatch.undo()             # put the shared board's bundle back for the tests after this one
    with SSHBoard(b.device(), b.settings(), sign=False) as sb:
        assert sb.deploy(installed_board["bundle"])["bundle_uploaded"]


def test_every_remote_argument_arrives_intact(board):
    weird = ["a b", "it's", 'say "hi"', "$(touch /tmp/pwned)", "`id`", "*", "semi;colon", "new\nline", "ünï", "",
             "--flag", "back\\slash"]
    with SSHBoard(board.device(), board.settings(), sign=False) as sb:
        r = sb.conn.run(["python3", "-c", "import sys, json; print(json.dumps(sys.argv[1:]))", *weird])
        assert json.loads(r.stdout) == weird
        r = sb.conn.script('printf "%s|" "$@"', "x y", "$HOME", what="printf")
        assert r.stdout == "x y|$HOME|"
    assert not os.path.exists("/tmp/pwned")


def test_trust_on_first_use_records_the_host_key(board, tmp_path):
    kh = tmp_path / "known_hosts"
    with SSHBoard(board.device(), board.settings(known_hosts=(str(kh),), trust_on_first_use=True),
                  sign=False) as sb:
        assert sb.conn.run(["true"]).ok
        assert sb.conn.recorded_host_key.startswith("SHA256:")
    assert kh.read_text().split()[1:] == board.known_hosts_line().split()[1:]
    with SSHBoard(board.device(), board.settings(known_hosts=(str(kh),)), sign=False) as sb:   # strict again
        assert sb.conn.run(["true"]).ok


def test_runtime_upgrade_switches_current_and_keeps_one_previous(installed_board, tmp_path):
    b = installed_board["board"]
    versions = []
    for i in (1, 2):
        extra = make_wheel(tmp_path, "ecextra", f"0.0.{i}")
        with SSHBoard(b.device(), b.settings(), sign=False, extra_wheels=[extra]) as sb:
            rep = sb.deploy(installed_board["bundle"])
        assert rep["runtime"]["installed"] and not rep["bundle_uploaded"]
        assert rep["runtime"]["uploaded"] == [f"blobs/{sha256_file(extra)}"]   # numpy was already there
        versions.append(rep["version"])
        assert board_state(b)["current"] == f"versions/{rep['version']}"
    st = assert_previous_install_works(b, installed_board["deploy"]["sha256"])
    assert set(st["versions"]) == set(versions)                      # the oldest one was collected
    r = b.board_python("-c", "import ecextra; print(ecextra.VERSION)")
    assert r.stdout.strip() == "0.0.2"
    # back to the plain runtime: an install already on the board is reused, not rebuilt
    with SSHBoard(b.device(), b.settings(), sign=False) as sb:
        rep = sb.deploy(installed_board["bundle"])
    assert rep["runtime"]["uploaded"] == []


def test_signed_deploy_makes_the_board_refuse_unsigned_bundles(board_factory, deploy_bundles, tmp_path,
                                                               monkeypatch):
    from edgecompress.deploy import keys
    monkeypatch.setenv("EDGECOMPRESS_KEYS_DIR", str(tmp_path / "keys"))
    key = keys.init_key()
    b = board_factory()
    with SSHBoard(b.device(), b.settings()) as sb:         # signs because a key exists
        rep = sb.deploy(deploy_bundles["fp32"])
        assert rep["signed"] and rep["runtime"]["trusted_key_installed"] == key.key_id
        res = sb.bench(deploy_bundles["fp32"], batches=(1,), warmup=1, iters=5)
        assert res["bundle"]["signature"]["verified"] and res["bundle"]["signature"]["enforced"]
    assert (b.home / ".config/edgecompress-runtime/trusted_keys" / f"{key.key_id}.pub").is_file()

    # the runtime on the board now refuses an unsigned bundle, whoever runs it
    unsigned = b.home / "unsigned.ecb"
    unsigned.write_bytes(deploy_bundles["int8"].read_bytes())
    os.chmod(unsigned, 0o644)
    r = b.board_python("-m", "edgecompress_runtime", "info", unsigned)
    assert r.returncode == 2 and "only runs signed bundles" in r.stderr and "unsigned" in r.stderr

    with SSHBoard(b.device(), b.settings(), sign=False) as sb:
        with pytest.raises(SignatureError, match="runs only bundles signed by") as e:
            sb.deploy(deploy_bundles["int8"])
    assert e.value.exit_code == 21
    other_dir = tmp_path / "other"
    monkeypatch.setenv("EDGECOMPRESS_KEYS_DIR", str(other_dir))
    other = keys.init_key()
    with SSHBoard(b.device(), b.settings()) as sb:
        with pytest.raises(SignatureError, match=f"not this host's key {other.key_id}.*--add-trusted-key"):
            sb.deploy(deploy_bundles["int8"])
    with SSHBoard(b.device(), b.settings(), add_trusted_key=True) as sb:
        assert sb.bench(deploy_bundles["int8"], batches=(1,), warmup=1, iters=5)["parity"]["ok"]


def test_cli_deploy_and_bench(installed_board, tmp_path, capsys):
    b = installed_board["board"]
    common = ["--device", b.spec, "-i", str(b.client_key), "--known-hosts", str(b.known_hosts), "--ssh-config", ""]
    fresh = unique_bundle(installed_board["bundle"], tmp_path / "cli.ecb", "cli")
    assert main(["deploy", str(fresh), *common, "--json", str(tmp_path / "deploy.json")]) == 0
    out = capsys.readouterr().out
    assert "cli.ecb ->" in out and "(uploaded; unsigned; runtime" in out
    assert main(["bench", str(fresh), *common, "--batch", "1,8", "--iters", "10", "--warmup", "1", "--repeat", "2",
                 "--json", str(tmp_path / "bench.json")]) == 0
    out = capsys.readouterr().out
    assert "parity" in out and "2 repeats" in out
    res = json.loads((tmp_path / "bench.json").read_text())
    assert res["parity"]["ok"] and res["deploy"]["bundle_uploaded"] is False


def test_demo_runs_on_a_board_over_ssh(installed_board, monkeypatch, capsys):
    """`edgecompress demo --device ...` hands run_demo an SSHBoard that behaves like LocalBoard."""
    import edgecompress.demo as demo
    b = installed_board["board"]
    seen = {}

    def fake_run_demo(board=None, iters=200, **kw):
        # what run_demo does with its board, on the session board's bundle
        seen["install"] = board.install_runtime(progress=lambda m: None)
        bench = board.bench(installed_board["bundle"], batches=(1, 256), iters=iters)
        summary = {"size_bytes": 1, "metrics_after": {"auc": 0.7, "logloss": 0.5}}
        result = {"target": kw["target"], "board": board.name, "size_ratio": 1.0, "auc_drop": 0.0,
                  "bundles": {"fp32": {"compile": summary, "bench": bench}}}
        seen["table"] = demo.format_demo_table(result)
        return result
    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    assert main(["demo", "--device", b.spec, "-i", str(b.client_key), "--known-hosts", str(b.known_hosts),
                 "--ssh-config", "", "--iters", "10", "--quiet"]) == 0
    assert seen["install"]["version"]
    assert f"measured on board '{b.spec.replace('@', '_').replace(':', '_')}'" in seen["table"]
    assert "this machine stands in" not in seen["table"]
