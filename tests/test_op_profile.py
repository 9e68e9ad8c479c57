"""``bench --profile``: every node of the numpy graph timed on the board, by op and by layer,
with the latency model's estimate next to each, and the sum of the per-node medians within
15 % of the whole-model p50 (issue 14, item 2).

Real parts only: a small DLRM compiled here (numpy graph + .tflite), this machine as a board
(its own venv, benchmarks in their own processes) and a real OpenSSH board. The machine is
shared (2 cores, CI, other jobs): the profile runs at a batch where the timers' own cost is
small, and a sum outside 15 % is measured once more before the test fails."""
from __future__ import annotations

import re

import pytest

from edgecompress.deploy.local import LocalBoard

BATCH = 1024       # a batch the target lists (the compiler's estimate is stored for it)
TOLERANCE = 0.15


@pytest.fixture(scope="module")
def prof_bundle(tmp_path_factory):
    import torch

    import edgecompress as ec
    from edgecompress.data import synthetic_ctr
    from edgecompress.models.zoo import model_for_data
    from edgecompress.passes import DEFAULT_PLAN
    from edgecompress.train import train
    data = synthetic_ctr(n=4000, vocab_sizes=(3000, 800, 200, 50), dense_dim=4, seed=7)
    tr, te = data.split((0.8, 0.2), seed=0)
    torch.manual_seed(0)
    model = model_for_data("dlrm", tr, embedding_dim=16, bottom_mlp=(32, 16), top_mlp=(32,))
    train(model, tr, epochs=1, batch_size=512, lr=3e-3, progress=False)
    out = tmp_path_factory.mktemp("profile") / "dlrm-int8.ecb"
    return ec.compile(model, target="local", data=te, output=out, plan=list(DEFAULT_PLAN),
                      formats=["numpy", "litert"], progress=False).path


def _graph_nodes(path) -> list:
    from edgecompress_runtime.bundle import read_bundle
    return read_bundle(path).manifest["graph"]["nodes"]


def _measured_within(measure):
    """The profile, measured once more when its sum is off by more than TOLERANCE (a shared machine)."""
    prof = measure()
    if abs(prof["sum_vs_whole"]) > TOLERANCE:
        prof = measure()
    return prof


def _check_profile(prof: dict, path, estimate: bool = True) -> None:
    from edgecompress_runtime.profile import DISPATCH, INPUT_CHECKS
    nodes = _graph_nodes(path)
    assert prof["batch"] == BATCH and prof["runs"] >= 50
    # one row per graph node, in graph order, naming its real op and value; plus input checks and dispatch
    rows = [r for r in prof["nodes"] if r["op"] not in (INPUT_CHECKS, DISPATCH)]
    assert [(r["out"], r["op"]) for r in rows] == [(n["out"], n["op"]) for n in nodes]
    assert all(r["ms"] >= 0 for r in prof["nodes"]) and sum(r["ms"] for r in rows) > 0
    ops = {g["op"] for g in prof["by_op"]}
    assert {"linear", "embedding_bag", "bmm"} <= ops and ops - {INPUT_CHECKS, DISPATCH} == {n["op"] for n in nodes}
    # layers: the module path lowering records on each node (relu layers included)
    assert {g["layer"] for g in prof["by_layer"]} >= {"bottom.0", "bottom.1", "top.0", "embeddings.0", "(forward)"}
    assert [r["layer"] for r in rows] == [n.get("mod") or "(forward)" for n in nodes]
    assert sum(g["nodes"] for g in prof["by_op"]) == len(nodes) + 2
    assert prof["sum_ms"] == pytest.approx(sum(g["ms"] for g in prof["by_op"]))
    assert prof["sum_ms"] == pytest.approx(sum(g["ms"] for g in prof["by_layer"]))
    # the must-show: the per-node medians account for the whole model's time
    assert abs(prof["sum_vs_whole"]) <= TOLERANCE, (prof["sum_ms"], prof["whole_p50_ms"])
    if estimate:
        est = prof["estimate"]
        assert est["batch"] == BATCH and est["target"] == "local" and est["total_ms"] > 0
        assert set(est["nodes"]) == {n["out"] for n in nodes}
        assert {n["op"] for n in nodes} <= set(est["by_op"]) and est["by_layer"]["top.0"] > 0
        from edgecompress_runtime.bundle import read_bundle
        compiled = read_bundle(path).manifest["metrics"]["latency_estimate_s"].get(str(BATCH))
        if compiled is not None:           # the same model the compiler used, per node
            assert est["total_ms"] == pytest.approx(compiled * 1e3, rel=1e-6)


def test_profile_in_process_lists_the_tflite_ops(prof_bundle):
    from edgecompress_runtime.profile import format_profile, layer_of, profile
    # a bundle compiled before lowering recorded module paths: the layer of the param a node reads
    assert layer_of({"op": "linear", "args": [{"v": "x"}, {"p": "top.0.weight"}], "out": "y"}) == "top.0"
    assert layer_of({"op": "cat", "args": [[{"v": "a"}, {"v": "b"}], 1], "out": "c"}) == "(forward)"
    prof = _measured_within(lambda: profile(prof_bundle, batch=BATCH, runs=80))
    _check_profile(prof, prof_bundle, estimate=False)
    lt = prof["litert"]
    assert lt["per_op_times"] is False and "no op profiler" in lt["reason"]
    assert lt["ops"].get("FULLY_CONNECTED", 0) >= 3 and sum(lt["ops"].values()) >= len(_graph_nodes(prof_bundle)) // 2
    text = format_profile(prof, top=5)
    assert "by op" in text and "by layer" in text and "FULLY_CONNECTED" in text
    assert len([ln for ln in text.splitlines() if re.match(r"^  \S.*\d%$", ln)]) == 10      # 5 ops + 5 layers


@pytest.fixture(scope="module")
def local_board(tmp_path_factory):
    b = LocalBoard(root=tmp_path_factory.mktemp("profile-board"))
    b.install_runtime(progress=lambda m: None)
    yield b
    b.close()


def test_profile_on_the_local_board(prof_bundle, local_board):
    def measure():
        res = local_board.bench(prof_bundle, batches=(1, BATCH), warmup=5, iters=50, rerun=False,
                                profile={"batch": BATCH, "runs": 80})
        assert res["parity"]["ok"] and res["latency"][1]["batch"] == BATCH
        return res["profile"]
    _check_profile(_measured_within(measure), prof_bundle)


def test_profile_over_ssh_from_the_command_line(prof_bundle, board, capsys, tmp_path):
    import json

    from edgecompress.cli import main
    from edgecompress_runtime.bundle import read_bundle
    common = ["--device", board.spec, "-i", str(board.client_key), "--known-hosts", str(board.known_hosts),
              "--ssh-config", "", "--no-sign"]
    out = tmp_path / "bench.json"

    def measure():
        rc = main(["bench", str(prof_bundle), "--batch", f"1,{BATCH}", "--iters", "50", "--warmup", "5",
                   "--min-seconds", "0", "--no-rerun", "--profile", "--profile-runs", "80", "--top", "4",
                   "--json", str(out), *common])
        assert rc == 0
        return json.loads(out.read_text())["profile"]
    prof = _measured_within(measure)
    _check_profile(prof, prof_bundle)
    text = capsys.readouterr().out
    assert f"op profile (numpy graph, batch {BATCH}" in text and "estimate ms" in text
    top_op = prof["by_op"][0]["op"]
    assert any(ln.strip().startswith(top_op) for ln in text.splitlines())
    assert "the latency model's total" in text
    assert read_bundle(prof_bundle).manifest["graph"]["nodes"][0]["out"] in {r["out"] for r in prof["nodes"]}
