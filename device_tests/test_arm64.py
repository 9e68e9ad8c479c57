"""The device suite's aarch64 leg: an emulated Debian bookworm arm64 board
(device_tests/boards/arm64.sh: qemu-user + binfmt, sshd in its own network
namespace) reached over SSH by the deployer, which installs the runtime there
from a pushed aarch64 wheelhouse (numpy, ai-edge-litert). Then: bench with
on-device parity for the numpy and LiteRT backends, and a quick calibration.

Few tests on purpose: emulation is slow (numpy import ~0.7 s, matmuls up to
600x slower). Every timing printed here is labelled EMULATED: it describes
qemu on this host, not an aarch64 device.

Skipped (with the reason) when this machine cannot run the board: not root,
no binfmt_misc / qemu-aarch64 handler, no network namespaces. ``make test``
builds the cached userland first (``make arm64-board``); without that cache the
first run builds it here (~5-9 min).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "boards"))

import arm64_board  # noqa: E402

EMULATED = "EMULATED (qemu-user on this host, not device speed)"


def _say(capsys, text: str) -> None:
    with capsys.disabled():
        print(f"\n[arm64 board] {text}")


@pytest.fixture(scope="module")
def arm64():
    ok, why = arm64_board.available()
    if not ok:
        pytest.skip(f"emulated arm64 board unavailable: {why}")
    board = arm64_board.start()          # builds the cached userland first when missing
    yield board
    board.stop()


@pytest.fixture(scope="module")
def arm64_ssh(arm64):
    from edgecompress.deploy.ssh_board import SSHBoard
    dev = arm64.device(packages=("ai-edge-litert",), workdir=".edgecompress-device-tests")
    with SSHBoard(dev, arm64.settings(), sign=False, install_timeout=1800, progress=lambda m: None) as b:
        yield b


@pytest.fixture(scope="module")
def litert_bundle(tmp_path_factory):
    """A small int8 DLRM bundle that also carries a LiteRT (.tflite) artifact."""
    pytest.importorskip("litert_torch", reason="the LiteRT exporter (pip install 'edgecompress[export]') is missing")
    import torch

    import edgecompress as ec
    from edgecompress.data import synthetic_ctr
    from edgecompress.models.zoo import model_for_data
    from edgecompress.passes import DEFAULT_PLAN
    from edgecompress.train import train
    data = synthetic_ctr(n=4000, vocab_sizes=(2000, 500, 100), dense_dim=4, seed=11)
    tr, te = data.split((0.8, 0.2), seed=0)
    torch.manual_seed(0)
    model = model_for_data("dlrm", tr, embedding_dim=8, bottom_mlp=(16,), top_mlp=(16,))
    train(model, tr, epochs=1, batch_size=512, lr=3e-3, progress=False)
    out = tmp_path_factory.mktemp("arm64-bundle") / "dlrm-int8.ecb"
    res = ec.compile(model, target=arm64_board.TARGET, data=te, output=out, plan=list(DEFAULT_PLAN),
                     formats=["litert"], progress=False, latency_table=False)
    return Path(res.path)


def test_arm64_install_runtime_from_pushed_wheelhouse(arm64_ssh, capsys):
    rep = arm64_ssh.install_runtime(progress=lambda m: None)
    uname = arm64_ssh.conn.run(["uname", "-m"], timeout=60).stdout.strip()
    _say(capsys, f"uname -m on the board: {uname}; Python {rep['python']}; runtime {rep['version']} "
                 f"({'installed' if rep['installed'] else 'already installed'} in {rep['seconds']:.1f} s); "
                 f"wheels: {', '.join(rep['wheels'])}")
    assert uname == "aarch64" and rep["machine"] == "aarch64"
    assert rep["python"].startswith("3.11")
    assert any(w.startswith("numpy-") and "aarch64" in w for w in rep["wheels"])
    assert any(w.startswith("ai_edge_litert-") and "aarch64" in w for w in rep["wheels"])
    facts = arm64_ssh.facts(refresh=True)
    assert facts["machine"] == "aarch64"
    assert "numpy" in facts["packages"] and "ai-edge-litert" in facts["packages"]


@pytest.mark.parametrize("backend", ["numpy", "litert"])
def test_arm64_bench_with_on_device_parity(arm64_ssh, litert_bundle, backend, capsys):
    res = arm64_ssh.bench(litert_bundle, batches=(1, 16), warmup=2, iters=10, backend=backend)
    assert res["backend"] == backend
    assert res["parity"]["ok"], res["parity"]
    assert res["board"]["machine"] == "aarch64"
    assert res["emulated"] is True, "the board must report that it runs under emulation"
    _say(capsys, f"uname -m {res['board']['machine']}: {backend} parity max|diff| "
                 f"{res['parity']['max_abs_diff']:.2e} (tolerance {res['parity']['tolerance']}); "
                 + ", ".join(f"b={r['batch']} p50 {r['p50_ms']:.2f} ms" for r in res["latency"])
                 + f" -- {EMULATED}")


def test_arm64_quick_calibration_is_labelled_emulated(arm64_ssh, capsys, tmp_path, monkeypatch):
    from edgecompress.calibrate import calibrate
    from edgecompress.plan.latency_table import LatencyTable
    monkeypatch.setenv("EDGECOMPRESS_LATENCY_DIR", str(tmp_path))
    # one run per probe, numpy only: this checks the emulated path and its labels, not the fit's
    # accuracy (benchmarks/calibration.py measures that); the defaults took ~7 min under qemu here
    out = calibrate(board=arm64_ssh, batches=[1, 16], progress=lambda m: None,
                    fit_kwargs={"repeat": 1, "iters": 20, "min_seconds": 0.3, "backends": []})
    table = out["table"]
    assert table["board"]["machine"] == "aarch64" and table["quick"]
    assert table["board"]["emulated"] and table["label"] == "emulated"
    assert (tmp_path / f"{arm64_ssh.name}.json").is_file()
    t = LatencyTable(table)
    assert t.emulated and "EMULATED" in t.describe()
    # the graph fit measured whole probe models on the board, at each calibrated batch size
    assert [p["batch"] for p in table["graph_fit"]["points"]] == [1, 16] and t.has_graph_fit
    assert all(r["measured_p50_s"] > 0 for r in table["graph_fit"]["probes"])
    _say(capsys, f"quick calibration on aarch64 in {table['seconds']:.1f} s ({EMULATED}): "
                 f"dispatch {t.dispatch_s * 1e6:.1f} us/node")


def test_arm64_op_profile_accounts_for_the_model(arm64_ssh, litert_bundle, capsys):
    """``bench --profile`` on aarch64: one row per graph node naming its op, and the per-node
    medians summing to the whole-model p50 within 15 %. A run the host preempts (this VM is
    shared) stalls at a random node, which per-node medians leave out: when most runs stall
    the sum falls short, so the profile is measured once more and, if still off, must say so
    (``stalled_runs``) with the runs that did not stall within 15 % of the sum."""
    from edgecompress_runtime.bundle import read_bundle
    nodes = read_bundle(litert_bundle).manifest["graph"]["nodes"]
    for attempt in range(2):
        res = arm64_ssh.bench(litert_bundle, batches=(1, 16), warmup=2, iters=10, backend="numpy",
                              profile={"batch": 16, "runs": 30})
        prof = res["profile"]
        if abs(prof["sum_vs_whole"]) <= 0.15:
            break
    assert [(r["out"], r["op"]) for r in prof["nodes"] if not r["op"].startswith("(")] == \
        [(n["out"], n["op"]) for n in nodes]
    assert {"linear", "embedding_bag"} <= {g["op"] for g in prof["by_op"]}
    assert prof["estimate"]["target"] == arm64_board.TARGET and prof["estimate"]["total_ms"] > 0
    _say(capsys, f"op profile b=16 ({EMULATED}): sum of nodes {prof['sum_ms']:.3f} ms vs whole p50 "
                 f"{prof['whole_p50_ms']:.3f} ms ({prof['sum_vs_whole'] * 100:+.0f}%), stalled runs "
                 f"{prof['stalled_runs'] * 100:.0f}%; top op {prof['by_op'][0]['op']}")
    if abs(prof["sum_vs_whole"]) > 0.15:
        assert prof["stalled_runs"] >= 0.5, prof
        assert abs(prof["unstalled_p50_ms"] - prof["sum_ms"]) <= 0.15 * prof["sum_ms"], prof
