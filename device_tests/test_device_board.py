"""The deploy cycle on one board: install, bench with parity, re-deploy, clean up, deploy again.
Tests in this module run in order and share the board (see conftest.py for how to point
them at a real device)."""
from __future__ import annotations

import pytest

from edgecompress.deploy.ssh_board import SSHBoard


@pytest.fixture(scope="module")
def board(dut):
    dev, settings = dut
    with SSHBoard(dev, settings, sign=False) as b:
        yield b


def _workdir_exists(board) -> bool:
    inst_dir = board.device.workdir
    return board.conn.run(["test", "-d", inst_dir], check=False, timeout=30).exit_code == 0


def test_install_runtime(board):
    rep = board.install_runtime(progress=print)
    assert rep["version"] and rep["python"].startswith("3.")
    board.close()                                                # a new session sees it installed
    again = board.install_runtime(progress=print)
    assert again["version"] == rep["version"] and not again["installed"] and again["uploaded"] == []


def test_bench_every_bundle_with_parity(board, device_bundles):
    for bundle in device_bundles:
        res = board.bench(bundle, batches=(1, 16), warmup=3, iters=20)
        assert res["parity"]["ok"], res["parity"]
        assert res["bundle"]["sha256"] == res["deploy"]["sha256"]
        assert res["board"]["machine"] and res["board"]["python"] and res["board"]["packages"]["numpy"]
        assert all(r["p50_ms"] > 0 and r["p50_ms"] <= r["p99_ms"] for r in res["latency"])


def test_redeploy_uploads_nothing(board, device_bundles):
    board.close()
    for bundle in device_bundles:
        rep = board.deploy(bundle)
        assert not rep["bundle_uploaded"] and rep["runtime"]["uploaded"] == []


def test_cleanup_removes_everything(board):
    assert _workdir_exists(board)
    board.uninstall()
    assert not _workdir_exists(board)


def test_deploy_again_after_cleanup(board, device_bundles):
    res = board.bench(device_bundles[0], batches=(1,), warmup=1, iters=5)
    assert res["parity"]["ok"] and res["deploy"]["bundle_uploaded"]
    board.uninstall()
    assert not _workdir_exists(board)
