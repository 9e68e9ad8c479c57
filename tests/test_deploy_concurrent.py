"""Concurrent deploys (issue 13 item 6): several deploys of different runtime versions to one
real sshd board at once, each benchmarking what it installed while the others install, switch
and clean up; a deploy that cannot get the board's install lock names its holder; LocalBoards
sharing one cached venv install it once.

Rounds: ``EDGECOMPRESS_CONCURRENT_ROUNDS`` (default 3; the issue's 10 rounds run with
``EDGECOMPRESS_CONCURRENT_ROUNDS=10``, ~3 min here)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from boards import assert_previous_install_works, board_state, make_wheel

from edgecompress.deploy.install import KEEP_VERSIONS
from edgecompress.deploy.local import LocalBoard
from edgecompress.deploy.ssh_board import SSHBoard
from edgecompress.errors import DeployError

ROUNDS = int(os.environ.get("EDGECOMPRESS_CONCURRENT_ROUNDS", "3"))
DEPLOYS = 3


def _deploy_and_bench(b, bundle, extra, out: dict, start: threading.Barrier) -> None:
    try:
        with SSHBoard(b.device(), b.settings(), sign=False, extra_wheels=[extra]) as sb:
            start.wait(30)
            out["deploy"] = sb.deploy(bundle)
            out["bench"] = sb.bench(bundle, batches=(1,), warmup=1, iters=3)
    except BaseException as e:         # reported by the test, with which deploy it was
        out["error"] = e


def test_concurrent_deploys_of_different_versions_each_bench_their_own(board_factory, deploy_bundles, tmp_path):
    b = board_factory()
    bundle = deploy_bundles["fp32"]
    with SSHBoard(b.device(), b.settings(), sign=False) as sb:       # numpy + the runtime once, as a farm would
        sb.deploy(bundle)
    outcomes = []
    for rnd in range(ROUNDS):
        wheels = [make_wheel(tmp_path / f"r{rnd}", "ecextra", f"{rnd}.{i}") for i in range(DEPLOYS)]
        outs = [{} for _ in range(DEPLOYS)]
        start = threading.Barrier(DEPLOYS)
        threads = [threading.Thread(target=_deploy_and_bench, args=(b, bundle, w, o, start))
                   for w, o in zip(wheels, outs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        for i, o in enumerate(outs):
            assert "error" not in o, f"round {rnd} deploy {i}: {o['error']!r}"
            dep, res = o["deploy"], o["bench"]
            # the bench ran in the venv of the version this deploy installed, holding its own extra wheel
            assert dep["runtime"]["installed"] and res["deploy"]["version"] == dep["version"]
            assert res["board"]["packages"]["ecextra"] == f"{rnd}.{i}", (rnd, i, res["board"]["packages"])
            assert f"/versions/{dep['version']}/venv/" in res["board"]["python_executable"]
            assert res["parity"]["ok"]
            outcomes.append((rnd, i, dep["version"], dep["runtime"]["steps"]["lock_wait"]))
        assert len({o["deploy"]["version"] for o in outs}) == DEPLOYS
    # the installs took turns (some waited for the lock) and left the board consistent
    assert sum(w > 0 for *_, w in outcomes) >= 1, outcomes
    st = assert_previous_install_works(b, outs[0]["deploy"]["sha256"])
    assert st["staging"] == []
    # once those sessions ended nothing pins their versions: the next deploy's clean-up takes them
    with SSHBoard(b.device(), b.settings(), sign=False) as sb:
        sb.deploy(bundle)
    assert len(board_state(b)["versions"]) <= KEEP_VERSIONS + 1
    print("\nround, deploy, version, lock wait s:", *outcomes, sep="\n  ")


def test_a_deploy_that_cannot_get_the_lock_names_its_holder(board_factory, deploy_bundles, tmp_path):
    b = board_factory()
    with SSHBoard(b.device(), b.settings(), sign=False) as sb:
        first = sb.deploy(deploy_bundles["fp32"])
    code = ("import sys, time; from edgecompress_runtime.board.install import board_lock\n"
            "with board_lock(sys.argv[1], 5, 'installing runtime other', 'ci-runner pid 7'):\n"
            "    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(b.workdir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        extra = make_wheel(tmp_path, "ecextra", "9.9")
        t0 = time.monotonic()
        with SSHBoard(b.device(), b.settings(), sign=False, extra_wheels=[extra], lock_timeout=1.0) as sb:
            with pytest.raises(DeployError, match=rf"the board is busy: pid {holder.pid} on .*ci-runner pid 7.*"
                                                  r"installing runtime other.*holds its install lock") as e:
                sb.deploy(deploy_bundles["fp32"])
        assert time.monotonic() - t0 < 30
        assert f"{b.workdir}/.lock" in str(e.value) and "UTC" in str(e.value) and "\n" not in str(e.value)
        assert board_state(b)["current"] == f"versions/{first['version']}"      # unchanged
    finally:
        holder.kill()
        holder.wait()
    with SSHBoard(b.device(), b.settings(), sign=False, extra_wheels=[extra], lock_timeout=1.0) as sb:
        assert sb.deploy(deploy_bundles["fp32"])["runtime"]["installed"]


def test_local_boards_sharing_one_venv_install_it_once(tmp_path):
    """Two LocalBoards (threads) creating the same cached venv at once both succeed."""
    root = tmp_path / "local-board"
    outs = [{} for _ in range(2)]
    start = threading.Barrier(2)

    def run(out):
        try:
            board = LocalBoard(root=root, progress=lambda m: None)
            start.wait(30)
            out["install"] = board.install_runtime(progress=lambda m: None)
            out["backends"] = board.backends()
        except BaseException as e:
            out["error"] = e
    threads = [threading.Thread(target=run, args=(o,)) for o in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(900)
    assert all("error" not in o for o in outs), [o.get("error") for o in outs]
    assert sorted(o["install"]["installed"] for o in outs) == [False, True]      # one built it, one waited
    assert all("numpy" in o["backends"] for o in outs)
    r = subprocess.run([str(root / "venv" / "bin" / "python"), "-c", "import edgecompress_runtime, numpy"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_wheels_another_deploys_clean_up_removed_are_uploaded_again(board_factory, deploy_bundles, tmp_path):
    """Between this deploy's upload and its install, the wheel vanishes from the board (as when
    another deploy's clean-up takes it): the install program says which, the host uploads it again."""
    from edgecompress.deploy.wheels import sha256_file
    b = board_factory()
    extra = make_wheel(tmp_path, "ecextra", "5.0")
    blob = b.workdir / "blobs" / sha256_file(extra)
    removed = []

    def on_step(step):
        if step == "install" and not removed and blob.exists():
            blob.unlink()
            removed.append(step)
    with SSHBoard(b.device(), b.settings(), sign=False, extra_wheels=[extra], on_step=on_step) as sb:
        rep = sb.deploy(deploy_bundles["fp32"])
        res = sb.bench(deploy_bundles["fp32"], batches=(1,), warmup=1, iters=3)
    assert removed and rep["runtime"]["installed"]
    assert rep["runtime"]["uploaded"].count(f"blobs/{blob.name}") == 2         # once, then again
    assert res["board"]["packages"]["ecextra"] == "5.0" and blob.is_file()
