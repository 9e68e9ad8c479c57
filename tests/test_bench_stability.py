"""Benchmarks say whether their numbers can be trusted, and refuse bundles the board cannot be.

Real parts only: small bundles compiled here, this machine as a board (its own venv,
benchmarks in their own processes), CPU hogs that are real busy-looping processes, a real
OpenSSH board for the command line. The machine is shared (CI, other jobs), so the quiet
run asserts the structure and the confidence intervals, not that it is "stable"."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from edgecompress.deploy.local import LocalBoard
from edgecompress.errors import AgreementError

BENCH = dict(batches=(1, 64), warmup=5, iters=150, min_seconds=0.2)


@pytest.fixture(scope="module")
def stab_bundles(tmp_path_factory):
    """The same small DLRM compiled for this machine ("local") and for a Jetson Nano (aarch64)."""
    import torch

    import edgecompress as ec
    from edgecompress.data import synthetic_ctr
    from edgecompress.models.zoo import model_for_data
    from edgecompress.train import train
    out = tmp_path_factory.mktemp("stab")
    data = synthetic_ctr(n=3000, vocab_sizes=(400, 150, 60), dense_dim=4, seed=5)
    tr, te = data.split((0.8, 0.2), seed=0)
    torch.manual_seed(0)
    model = model_for_data("dlrm", tr, embedding_dim=8, bottom_mlp=(8,), top_mlp=(8,))
    train(model, tr, epochs=1, batch_size=512, lr=3e-3, progress=False)
    from edgecompress.passes import DEFAULT_PLAN
    paths = {}
    for name, target, plan in (("local", "local", []), ("jetson", "jetson-nano", []),
                               ("int8", "local", list(DEFAULT_PLAN))):
        res = ec.compile(model, target=target, data=te, output=out / f"{name}.ecb", formats=["numpy"],
                         progress=False, plan=plan)
        paths[name] = res.path
    return paths


@pytest.fixture(scope="module")
def local_board(tmp_path_factory):
    b = LocalBoard(root=tmp_path_factory.mktemp("stab-board"))
    b.install_runtime(progress=lambda m: None)
    yield b
    b.close()


@pytest.fixture()
def hogs():
    """Two busy-looping processes (this machine has 2 cores): a board someone else is using."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    time.sleep(0.3)
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def _check_row_structure(row):
    assert row["verdict"] in ("stable", "noisy", "unusable")
    assert row["iters"] >= 150 and row["seconds"] >= 0.2          # both minimums met
    ci = row["ci"]
    assert ci["confidence"] == 0.95
    lo, hi = ci["p50_ms"]
    assert lo is not None and hi is not None and lo <= row["p50_ms"] <= hi
    assert ci["p90_ms"][0] <= row["p90_ms"] and (ci["p90_ms"][1] is None or row["p90_ms"] <= ci["p90_ms"][1])
    assert row["min_ms"] <= row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert row["iqr_ms"] >= 0 and row["p99_p50"] >= 1 and row["cv"] >= 0
    for r in row["reasons"]:
        assert set(r) >= {"code", "severity", "text"} and r["text"]
    if row["verdict"] != "stable":
        assert any(r["severity"] == row["verdict"] for r in row["reasons"])
    env = row["environment"]
    assert env["load1"] is not None and env["cores"] >= 1 and env["others_cores"] is not None


def test_quiet_bench_reports_cis_and_a_verdict(stab_bundles, local_board):
    from edgecompress_runtime.bench import format_table
    res = local_board.bench(stab_bundles["local"], **BENCH)
    for row in res["latency"]:
        _check_row_structure(row)
    st = res["stability"]
    assert st["verdict"] == max((r["verdict"] for r in res["latency"]),
                                key=["stable", "noisy", "unusable"].index)
    assert res["runs"][0]["stability"]["verdict"] == st["verdict"]
    json.dumps(res)                                                 # the JSON carries all of it
    text = format_table(res)
    assert "p50 95% CI" in text and f"stability: {st['verdict'].upper()}" in text
    # a bundle for the board's own profile: predicted vs measured is compared
    assert res["target_check"]["compare_predictions"] and "predicted_ms" in res["latency"][0]


def test_a_cpu_hog_makes_the_bench_noisy_and_says_why(stab_bundles, local_board, hogs):
    from edgecompress_runtime.bench import format_table
    said = []
    res = local_board.bench(stab_bundles["local"], rerun=True, cooldown_s=0.2, progress=said.append, **BENCH)
    st = res["stability"]
    assert st["verdict"] in ("noisy", "unusable"), st
    codes = {r["code"] for r in st["reasons"] if r["severity"] != "note"}
    assert codes & {"busy", "load"}, st["reasons"]
    busy = [r for r in st["reasons"] if r["code"] == "busy"]
    assert busy and "other processes kept" in busy[0]["text"]
    assert max(r["environment"]["others_cores"] for r in res["latency"]) >= 0.5
    # re-run once after the cooldown, and said so
    assert res["rerun"]["cooldown_s"] == 0.2 and res["rerun"]["verdict"] in ("noisy", "unusable")
    assert any("running it again after a 0.2 s cooldown" in m for m in said)
    text = format_table(res)
    assert "do not compare these numbers" in text and "other processes kept" in text and "re-run once" in text


def test_demo_table_flags_noise_instead_of_a_speed_up(stab_bundles, local_board, hogs):
    from edgecompress.demo import format_demo_table
    benches = {n: local_board.bench(stab_bundles[p], batches=(1, 256), warmup=3, iters=120, min_seconds=0.1)
               for n, p in (("fp32", "local"), ("compressed", "int8"))}
    summary = {"size_bytes": 1000, "metrics_after": {"auc": 0.7, "logloss": 0.5}}
    result = {"target": "local", "board": "local", "size_ratio": 0.5, "auc_drop": 0.0, "chosen_plan": "int8",
              "bundles": {n: {"compile": summary, "bench": b} for n, b in benches.items()}}
    assert any(b["stability"]["verdict"] != "stable" for b in benches.values())
    text = format_demo_table(result)
    assert "NOT STABLE, so no speed-up is claimed" in text and "not compared" in text
    assert "NOISY" in text or "UNUSABLE" in text


def test_pinning_to_one_core(stab_bundles, local_board):
    res = local_board.bench(stab_bundles["local"], batches=(1,), warmup=2, iters=40, cores="0")
    assert res["pinning"]["cpus"] == [0] and res["pinning"]["spec"] == "0"
    assert res["latency"][0]["environment"]["cpus_measured"] == 1
    from edgecompress.errors import RemoteCommandError
    with pytest.raises(RemoteCommandError, match="not online or not allowed"):
        local_board.bench(stab_bundles["local"], batches=(1,), warmup=1, iters=5, cores="0-4095")


def test_wrong_architecture_refused_and_forced(stab_bundles, local_board):
    with pytest.raises(AgreementError) as e:
        local_board.bench(stab_bundles["jetson"], batches=(1,), iters=5)
    msg = str(e.value)
    assert e.value.exit_code == 24
    assert "jetson-nano (aarch64)" in msg and "x86_64" in msg and "--force" in msg
    res = local_board.bench(stab_bundles["jetson"], batches=(1,), warmup=1, iters=40, force=True)
    assert res["parity"]["ok"] and res["target_check"]["forced"]
    # the jetson's latency estimate is not this board's: not compared
    assert "predicted_ms" not in res["latency"][0] and "aarch64" in res["prediction"]["withheld"]


def test_cli_refuses_a_wrong_architecture_bundle(stab_bundles, board, capsys):
    from edgecompress.cli import main
    common = ["--device", board.spec, "-i", str(board.client_key), "--known-hosts", str(board.known_hosts),
              "--ssh-config", ""]
    for verb in (["deploy"], ["bench", "--iters", "5"]):
        assert main([verb[0], str(stab_bundles["jetson"]), *verb[1:], *common]) == 24
        err = capsys.readouterr().err
        assert "compiled for target jetson-nano (aarch64)" in err and "--force" in err


def test_farm_page_flags_noisy_runs(stab_bundles, local_board, hogs):
    from edgecompress.report.farm_page import render_html
    res = local_board.bench(stab_bundles["local"], batches=(1,), warmup=2, iters=120, min_seconds=0.1)
    assert res["stability"]["verdict"] in ("noisy", "unusable")
    report = {"summary": {"ok": 1, "jobs": 1, "failed": 0, "devices_down": []}, "parallel": 1, "started": None,
              "devices": {"local": {"address": "local", "target": "local", "status": "ok", "jobs_ok": 1,
                                    "jobs_failed": 0, "jobs_taken_over": 0, "facts": res["board"], "error": None}},
              "bundles": {str(stab_bundles["local"]): {"size_bytes": 1000}},
              "jobs": [{"device": "local", "ran_on": "local", "bundle": str(stab_bundles["local"]), "status": "ok",
                        "attempts": 1, "result": res}]}
    page = render_html(report)
    assert "1 run(s) not stable" in page and "class='noisy'" in page
    assert res["stability"]["verdict"].upper() in page and "other processes kept" in page
