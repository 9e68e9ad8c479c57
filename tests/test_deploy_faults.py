"""The fault matrix, each against a real sshd board (tests/boards.py).

For every fault: a specific error with its own exit code and a message that says
what happened and what to do; the board's previous install still works; no
partial files in the install directories (versions/, bundles/, blobs/, current);
and the next deploy succeeds and clears what the failed one left in staging.
Timeouts are small here (see Board.settings) so the whole matrix stays fast.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest
from boards import (SilentListener, assert_previous_install_works, board_state, ensure_tool, free_port,
                    make_wheel, unique_bundle)

from edgecompress.cli import main
from edgecompress.deploy.ssh_board import SSHBoard
from edgecompress.deploy.wheels import sha256_file
from edgecompress.errors import (AuthError, ConnectionLostError, DiskFullError, HostKeyError, NoBannerError,
                                 RemoteCommandError, RemoteTimeoutError, UnknownHostError, UnreachableError)


def _cli(board, *extra, bundle) -> int:
    return main(["deploy", str(bundle), "--device", board.spec, "-i", str(board.client_key),
                 "--known-hosts", str(board.known_hosts), "--ssh-config", "", "--connect-timeout", "3",
                 "--no-sign", *extra])


@pytest.fixture()
def fresh(installed_board, tmp_path):
    """A bundle the board has never seen (its upload can't be skipped) + the check after the fault."""
    ib = installed_board
    n = [0]

    def new_bundle():
        n[0] += 1
        return unique_bundle(ib["bundle"], tmp_path / f"new{n[0]}.ecb", f"{tmp_path.name}-{n[0]}")

    def intact():
        return assert_previous_install_works(ib["board"], ib["deploy"]["sha256"])
    return ib["board"], new_bundle, intact


def _redeploy_clears_staging(board, bundle, **kw):
    with SSHBoard(board.device(), board.settings(), sign=False, **kw) as sb:
        rep = sb.deploy(bundle)
    st = board_state(board)
    assert st["staging"] == [], st
    return rep


# ---------------------------------------------------------------------------- before any byte moves


def test_wrong_host_key(fresh, tmp_path, capsys):
    board, new_bundle, intact = fresh
    kh = tmp_path / "kh"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / "other"], check=True)
    kt, b64 = (tmp_path / "other.pub").read_text().split()[:2]
    name = board.known_hosts_line().split()[0]
    kh.write_text(f"{name} {kt} {b64}\n")
    with SSHBoard(board.device(), board.settings(known_hosts=(str(kh),)), sign=False) as sb:
        with pytest.raises(HostKeyError, match="HOST KEY CHANGED.*attack.*ssh-keygen -R") as e:
            sb.deploy(new_bundle())
    assert e.value.exit_code == 14 and not isinstance(e.value, UnknownHostError)
    board.known_hosts.write_text(kh.read_text())
    try:
        assert _cli(board, bundle=new_bundle()) == 14
    finally:
        board.known_hosts.write_text(board.known_hosts_line())
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "HOST KEY CHANGED" in err
    intact()


def test_unknown_host(fresh, tmp_path, capsys):
    board, new_bundle, intact = fresh
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with SSHBoard(board.device(), board.settings(known_hosts=(str(empty),)), sign=False) as sb:
        with pytest.raises(UnknownHostError, match="not in known_hosts.*SHA256:.*--trust-on-first-use") as e:
            sb.deploy(new_bundle())
    assert e.value.exit_code == 15
    assert empty.read_text() == ""                       # nothing recorded without the opt-in
    intact()


@pytest.mark.parametrize("who", ["bad key", "unknown user"])
def test_bad_key_or_unknown_user(fresh, tmp_path, who, capsys):
    board, new_bundle, intact = fresh
    dev = board.device()
    if who == "bad key":
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / "k"], check=True)
        dev = dev.with_(identity_file=str(tmp_path / "k"))
    else:
        dev = dev.with_(user="nosuchuser")
    with SSHBoard(dev, board.settings(), sign=False) as sb:
        with pytest.raises(AuthError, match="refused login as .*authorized_keys") as e:
            sb.deploy(new_bundle())
    assert e.value.exit_code == 16
    intact()


def test_password_only_server(board_factory, deploy_bundles, monkeypatch):
    b = board_factory(password_only=True)
    with SSHBoard(b.device(), b.settings(), sign=False) as sb:
        with pytest.raises(AuthError, match="accepts only password login.*--allow-password") as e:
            sb.deploy(deploy_bundles["fp32"])
    assert e.value.exit_code == 16
    # allowed, but the password is wrong: still a clear AuthError, and the password never shows up
    monkeypatch.setenv("EDGECOMPRESS_SSH_PASSWORD", "not-the-password-42")
    with SSHBoard(b.device(allow_password=True), b.settings(), sign=False) as sb:
        with pytest.raises(AuthError) as e:
            sb.deploy(deploy_bundles["fp32"])
    assert "not-the-password-42" not in str(e.value)


def test_nothing_listening(deploy_bundles, board, capsys):
    port = free_port()
    dev = board.device()
    dev = dev.with_(host="127.0.0.1", port=port)
    t0 = time.perf_counter()
    with SSHBoard(dev, board.settings(), sign=False) as sb:
        with pytest.raises(UnreachableError, match="nothing is listening.*connection refused.*sshd") as e:
            sb.deploy(deploy_bundles["fp32"])
    assert e.value.exit_code == 12 and time.perf_counter() - t0 < 2
    assert main(["deploy", str(deploy_bundles["fp32"]), "--device", f"x@127.0.0.1:{port}", "--ssh-config", "",
                 "--known-hosts", "/dev/null", "--no-sign"]) == 12
    assert "nothing is listening" in capsys.readouterr().err


def test_silent_listener_no_banner(deploy_bundles, board, capsys):
    srv = SilentListener()
    try:
        dev = board.device()
        dev = dev.with_(host="127.0.0.1", port=srv.port)
        t0 = time.perf_counter()
        with SSHBoard(dev, board.settings(banner_timeout=2), sign=False) as sb:
            with pytest.raises(NoBannerError, match="sent no SSH banner within 2 s") as e:
                sb.deploy(deploy_bundles["fp32"])
        took = time.perf_counter() - t0
        assert main(["deploy", str(deploy_bundles["fp32"]), "--device", f"x@127.0.0.1:{srv.port}", "--ssh-config",
                     "", "--connect-timeout", "2", "--no-sign"]) == 13
    finally:
        srv.close()
    assert e.value.exit_code == 13 and 1.5 < took < 6, took
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no SSH banner" in err and "Traceback" not in err


def test_link_down_before_connecting(fresh):
    board, new_bundle, intact = fresh
    if not board.netns:
        pytest.skip("needs a namespace board")
    board.link(False)
    try:
        t0 = time.perf_counter()
        with SSHBoard(board.device(), board.settings(connect_timeout=2), sign=False) as sb:
            with pytest.raises(UnreachableError, match="no answer from .* within 2 s") as e:
                sb.deploy(new_bundle())
        assert time.perf_counter() - t0 < 5 and e.value.exit_code == 12
    finally:
        board.link(True)
    intact()


# ---------------------------------------------------------------------------- in the middle of the work


def test_disconnect_mid_upload(fresh):
    """SIGKILL the board's sshd session processes while a bundle is uploading."""
    board, new_bundle, intact = fresh
    killed = []

    def on_upload(name, sent, total):
        if not killed and sent >= 64 * 1024:
            killed.extend(board.kill_sessions())
    bundle = new_bundle()
    t0 = time.perf_counter()
    with SSHBoard(board.device(), board.settings(), sign=False, on_upload=on_upload) as sb:
        with pytest.raises(ConnectionLostError, match="lost the connection during the upload of .*previous install "
                                                      "still works") as e:
            sb.deploy(bundle)
    assert killed and e.value.exit_code == 17 and time.perf_counter() - t0 < 10
    intact()
    assert not (board.workdir / "bundles" / f"{sha256_file(bundle)}.ecb").exists()
    # the next deploy removes the dead session's partial upload and succeeds
    rep = _redeploy_clears_staging(board, bundle)
    assert rep["bundle_uploaded"]


def test_disconnect_mid_install(fresh, tmp_path):
    """Kill the session while pip builds a new runtime version: versions/ never sees it."""
    board, new_bundle, intact = fresh
    extra = make_wheel(tmp_path, "ecfault", "0.0.1")
    before = board_state(board)

    def on_step(step):
        if step == "install":
            threading.Timer(0.4, board.kill_sessions).start()
    with SSHBoard(board.device(), board.settings(), sign=False, extra_wheels=[extra], on_step=on_step) as sb:
        with pytest.raises(ConnectionLostError):
            sb.deploy(new_bundle())
    st = intact()
    assert st["versions"] == before["versions"] and st["current"] == before["current"]
    rep = _redeploy_clears_staging(board, new_bundle(), extra_wheels=[extra])
    assert rep["runtime"]["installed"]
    _redeploy_clears_staging(board, new_bundle())          # back to the plain runtime for the other tests


def test_link_down_mid_upload_fails_within_its_timeout(fresh):
    board, new_bundle, intact = fresh
    if not board.netns:
        pytest.skip("needs a namespace board")
    downed = []

    def on_upload(name, sent, total):
        if not downed and sent >= 64 * 1024:
            board.link(False)
            downed.append(time.perf_counter())
    try:
        with SSHBoard(board.device(), board.settings(tcp_user_timeout=3, keepalive=1, channel_timeout=6),
                      sign=False, on_upload=on_upload) as sb:
            with pytest.raises(ConnectionLostError) as e:
                sb.deploy(new_bundle())
        took = time.perf_counter() - downed[0]
    finally:
        board.link(True)
    assert e.value.exit_code == 17 and took < 9, took     # bounded: TCP_USER_TIMEOUT (3 s) + slack
    intact()
    # the board's sshd notices the dead session (ClientAlive) and the next deploy clears its staging
    deadline = time.monotonic() + 20
    while True:
        with SSHBoard(board.device(), board.settings(), sign=False) as sb:
            sb.deploy(new_bundle())
        if not board_state(board)["staging"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert board_state(board)["staging"] == []


def test_full_disk(board_factory, deploy_bundles, tmp_path):
    b = board_factory(workdir_tmpfs_mb=160)
    with SSHBoard(b.device(), b.settings(), sign=False) as sb:
        first = sb.deploy(deploy_bundles["fp32"])
    filler = b.fill_disk(leave_bytes=200 * 1024)
    big = unique_bundle(deploy_bundles["fp32"], tmp_path / "big.ecb", "disk")
    # 1) caught before uploading: nothing is touched
    with SSHBoard(b.device(), b.settings(), sign=False) as sb:
        with pytest.raises(DiskFullError, match="not enough disk space.*MB free.*nothing was changed") as e:
            sb.deploy(big)
    assert e.value.exit_code == 20
    assert_previous_install_works(b, first["sha256"])
    # 2) the disk fills during the upload (no pre-check): the partial file is removed at once
    with SSHBoard(b.device(), b.settings(), sign=False, space_check=False) as sb:
        with pytest.raises(DiskFullError, match="ran out of disk space during the upload.*partial file was removed"):
            sb.deploy(big)
    st = assert_previous_install_works(b, first["sha256"])
    assert st["staging"] == []
    # 3) a runtime upgrade that does not fit: pip fails on the board, the half-built venv is removed
    filler.unlink()
    b.fill_disk(leave_bytes=2 * 1024 * 1024)
    extra = make_wheel(tmp_path, "ecdisk", "0.0.1")
    with SSHBoard(b.device(), b.settings(), sign=False, space_check=False, extra_wheels=[extra]) as sb:
        with pytest.raises(DiskFullError, match="no space left on the board while installing runtime"):
            sb.deploy(deploy_bundles["fp32"])
    st = assert_previous_install_works(b, first["sha256"])
    assert st["staging"] == [] and st["versions"] == [first["version"]]
    (b.workdir / ".filler").unlink()
    with SSHBoard(b.device(), b.settings(), sign=False) as sb:
        assert sb.deploy(big)["bundle_uploaded"]


def test_hung_remote_command_is_stopped(fresh, installed_board):
    """A benchmark that would run for 10 minutes, with a 2 s timeout."""
    board, new_bundle, intact = fresh
    t0 = time.perf_counter()
    with SSHBoard(board.device(), board.settings(), sign=False) as sb:
        with pytest.raises(RemoteTimeoutError, match="did not finish within 2 s and was stopped on the board") as e:
            sb.bench(installed_board["bundle"], batches=(1,), iters=5, min_seconds=600, timeout_s=2)
        took = time.perf_counter() - t0
        # the same connection still works, and nothing keeps running on the board
        assert sb.conn.run(["true"]).ok
    assert e.value.exit_code == 18 and took < 8, took
    time.sleep(0.5)
    assert _board_processes(board, "edgecompress_runtime") == []
    intact()


def _board_processes(board, needle: str) -> list[str]:
    import pwd
    uid = pwd.getpwnam(board.user).pw_uid
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.stat(f"/proc/{p}").st_uid == uid:
                    cmd = open(f"/proc/{p}/cmdline", "rb").read().replace(b"\0", b" ").decode()
                    if needle in cmd:
                        out.append(cmd)
            except OSError:
                pass
    return out


def test_missing_python_on_the_board(fresh):
    board, new_bundle, intact = fresh
    dev = board.device()
    dev = dev.with_(python="python3.99")
    with SSHBoard(dev, board.settings(), sign=False) as sb:
        with pytest.raises(RemoteCommandError, match="no 'python3.99' on the board") as e:
            sb.deploy(new_bundle())
    assert e.value.exit_code == 19
    intact()


@pytest.mark.parametrize("kind", ["loss", "slow"])
def test_lossy_or_slow_link_still_deploys_correctly(fresh, kind):
    board, new_bundle, intact = fresh
    if not board.netns:
        pytest.skip("needs a namespace board")
    if kind == "loss" and not ensure_tool("nft", "nftables"):
        pytest.skip("nftables is not available")
    bundle = new_bundle()
    size = bundle.stat().st_size
    try:
        board.loss(15) if kind == "loss" else board.rate("4mbit")
        t0 = time.perf_counter()
        with SSHBoard(board.device(), board.settings(channel_timeout=20, tcp_user_timeout=15), sign=False) as sb:
            res = sb.bench(bundle, batches=(1,), warmup=1, iters=5)
        took = time.perf_counter() - t0
    finally:
        board.clear_faults()
    assert res["parity"]["ok"] and res["deploy"]["bundle_uploaded"]
    assert res["bundle"]["sha256"] == sha256_file(bundle)      # verified on the board after the bad link
    if kind == "slow":
        assert took > size * 8 / 4e6 * 0.7, took                 # the link really was slow
    intact()
