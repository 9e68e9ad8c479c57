"""The main job and the command lines, run as a user runs them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`edgecompress demo` in a subprocess, with its own board venv (no torch)."""
    tmp = tmp_path_factory.mktemp("demo")
    env = dict(os.environ, EDGECOMPRESS_CACHE=str(tmp / "cache"))
    r = subprocess.run([str(BIN / "edgecompress"), "demo", "--rows", "100000", "--iters", "50",
                        "--out", str(tmp / "out"), "--json", str(tmp / "demo.json")],
                       capture_output=True, text=True, env=env, timeout=900, cwd=tmp)
    assert r.returncode == 0, r.stderr[-3000:]
    return {"stdout": r.stdout, "json": json.loads((tmp / "demo.json").read_text()), "cache": tmp / "cache"}


def test_demo_prints_the_table(demo):
    out = demo["stdout"]
    assert "bundle" in out and "b=256 p50/p99 ms" in out and "peak RSS" in out
    assert out.count("MB") >= 2 and "fp32" in out and "compressed" in out and "chosen plan" in out


def test_demo_meets_the_compression_targets(demo):
    d = demo["json"]
    fp32, int8 = d["bundles"]["fp32"], d["bundles"]["compressed"]
    assert d["size_ratio"] <= 0.30
    assert fp32["compile"]["metrics_after"]["auc"] > 0.65          # the model learned something
    assert d["auc_drop"] <= 0.002
    assert fp32["bench"]["parity"]["max_abs_diff"] <= 1e-5
    assert int8["bench"]["parity"]["max_abs_diff"] <= 1e-2
    for b in (fp32, int8):
        lat = {r["batch"]: r for r in b["bench"]["latency"]}
        assert set(lat) == {1, 256}
        assert 0 < lat[1]["p50_ms"] <= lat[1]["p99_ms"]
        assert b["bench"]["peak_rss_mb"] > 10
        assert b["bench"]["system"]["numpy"]


def test_board_venv_holds_numpy_and_runtime_only(demo):
    py = demo["cache"] / "local-board" / "venv" / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True, check=True)
    names = {p["name"].lower() for p in json.loads(r.stdout)} - {"pip", "setuptools"}
    assert names == {"numpy", "edgecompress-runtime"}
    r = subprocess.run([str(py), "-c", "import edgecompress_runtime, sys; "
                        "print('torch' in sys.modules, 'edgecompress' in sys.modules)"],
                       capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["False", "False"]


def test_runtime_cli_info_and_bench(bundles, tmp_path):
    path = str(bundles["int8"].path)
    r = subprocess.run([str(BIN / "edgecompress-runtime"), "info", path], capture_output=True, text=True)
    assert r.returncode == 0 and "embedding_rowwise_quant" in r.stdout and "vocab" in r.stdout
    out = tmp_path / "b.json"
    r = subprocess.run([str(BIN / "edgecompress-runtime"), "bench", path, "--batch", "1,64", "--warmup", "2",
                        "--iters", "20", "--json", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert [x["batch"] for x in res["latency"]] == [1, 64]
    for x in res["latency"]:
        assert x["iters"] == 20 and x["p50_ms"] <= x["p90_ms"] <= x["p99_ms"] and x["cv"] >= 0
        assert x["throughput_rows_per_s"] > 0
    assert res["load_s"] > 0 and res["first_inference_s"] > 0 and res["parity"]["ok"]
    assert res["bundle"]["size_bytes"] == Path(path).stat().st_size
    assert res["system"]["cpu_model"] and "blas" in res["system"]


def test_runtime_cli_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.ecb"
    bad.write_bytes(b"PK\x03\x04 not really")
    r = subprocess.run([str(BIN / "edgecompress-runtime"), "info", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("edgecompress-runtime: error:") and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([str(BIN / "edgecompress-runtime"), "bench", str(bad), "--batch", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "batch sizes must be positive" in r.stderr


def test_targets_verb_lists_profiles():
    r = subprocess.run([str(BIN / "edgecompress"), "targets"], capture_output=True, text=True)
    assert r.returncode == 0
    for name in ("raspberry-pi-4", "raspberry-pi-5", "jetson-nano", "jetson-orin-nano", "android-phone",
                 "generic-aarch64", "local"):
        assert name in r.stdout
    r = subprocess.run([str(BIN / "edgecompress"), "compile", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "weights_only=True" in r.stdout


def test_compile_verb_with_a_user_factory(tmp_path, trained_dlrm, ctr_data):
    import torch
    from edgecompress.data import save_npz
    save_npz(ctr_data[1], tmp_path / "eval.npz")
    torch.save(trained_dlrm.state_dict(), tmp_path / "w.pt")
    (tmp_path / "mymodels.py").write_text(
        "from edgecompress.models import DLRM\n"
        "def make():\n    return DLRM([3000, 2000, 1000, 500, 100], 6, embedding_dim=32, bottom_mlp=(32,), top_mlp=(32,))\n")
    r = subprocess.run([str(BIN / "edgecompress"), "compile", "--model", "mymodels:make", "--weights", "w.pt",
                        "--data", "eval.npz", "--target", "raspberry-pi-4", "-o", "m.ecb", "--json", "--quiet"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["metrics_after"]["auc"] > 0.6 and (tmp_path / "m.ecb").exists()
    r = subprocess.run([str(BIN / "edgecompress"), "compile", "--model", "mymodels:nope", "--data", "eval.npz",
                        "-o", "x.ecb"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "cannot import --model" in r.stderr and not (tmp_path / "x.ecb").exists()


def test_example_two_tower_movielens(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import movielens_two_tower
        res = movielens_two_tower.main(["--epochs", "1", "--out", str(tmp_path / "tt.ecb"), "--user", "5"])
    finally:
        sys.path.pop(0)
    assert len(res["top"]) == 10 and not set(res["top"]) & set(res["seen"])
    assert res["scores"] == sorted(res["scores"], reverse=True)
    # better than random ranking over 1682 items (recall@10 of random = 10/1682 ~ 0.006)
    assert res["metrics_after"]["recall@10"] > 0.02
    assert abs(res["metrics_after"]["recall@10"] - res["metrics_before"]["recall@10"]) <= 0.01
