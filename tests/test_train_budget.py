"""The planner's training-aware moves (compile(train_budget=...), --train-budget): a memory budget no
post-training plan meets is met by training (the plan replays to the same bytes from the manifest);
without a train budget the same budget raises a BudgetError naming the option; a tiny budget stops
after the first trained move and says so; the flag and its parser."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import edgecompress as ec
import edgecompress_runtime as ecr
from edgecompress.cli import build_parser
from edgecompress.errors import TargetError
from edgecompress.passes import plan_from_json
from edgecompress.plan.training_moves import MOVES
from edgecompress.plan.training_search import MIN_STEPS
from edgecompress.units import parse_duration

BIN = Path(sys.executable).parent
BUDGET = 9000               # bytes: below every post-training plan of this model (smallest ~11.6 KB)
FACTORY = '''
import torch
from edgecompress.data import synthetic_ctr
from edgecompress.models.zoo import model_for_data


def data():
    return synthetic_ctr(n=12_000, vocab_sizes=(2000, 1000, 300), dense_dim=4, seed=5).split((0.7, 0.3), seed=0)


def make():
    return model_for_data("dlrm", data()[0], embedding_dim=16, bottom_mlp=(16,), top_mlp=(16,))
'''


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small seeded DLRM (3 tables of width 16), its train / held-out rows, and the module that makes it
    (for the CLI)."""
    from edgecompress.train import train
    where = tmp_path_factory.mktemp("small")
    (where / "smallmodel.py").write_text(FACTORY)
    sys.path.insert(0, str(where))
    try:
        import smallmodel
    finally:
        sys.path.remove(str(where))
    train_ds, test_ds = smallmodel.data()
    torch.manual_seed(0)
    model = smallmodel.make()
    train(model, train_ds, epochs=2, batch_size=512, lr=3e-3, progress=False)
    return model.eval(), train_ds, test_ds, where


def _compile(small, out, **kw):
    model, train_ds, test_ds, _ = small
    return ec.compile(model, target="local", data=test_ds, train_data=train_ds, output=out, memory_budget=BUDGET,
                      formats=["numpy"], seed=0, progress=False, **kw)


def _arrays(path):
    return {k: v["sha256"] for k, v in ecr.load(path).manifest["members"].items() if k.startswith("arrays")}


def test_training_meets_a_budget_no_post_training_plan_meets_and_replays(small, tmp_path):
    res = _compile(small, tmp_path / "t.ecb", train_budget="2m", report=tmp_path / "rep")
    assert res.size_bytes <= BUDGET and res.size_bytes == (tmp_path / "t.ecb").stat().st_size
    rec = res.search.training
    assert rec.reason == "no post-training plan fits the budgets" and rec.post_training is None
    assert rec.spent_s <= rec.budget_s == 120
    chosen = res.search.chosen
    assert chosen.state.training and chosen.plan == res.plan
    assert any(getattr(c, "NEEDS_TRAIN_DATA", False) for c in res.plan), res.plan      # a training pass
    trained = [r for r in rec.runs if r.status == "trained"]
    assert trained and trained[-1].plan == res.plan and trained[-1].train_s > 0 and trained[-1].rows >= 1024
    skipped = {r.move: r.why for r in rec.runs if r.status == "skipped"}
    assert "over the budgets" in skipped["QAT int4 rows + int8 Linear"]     # previewed, never trained
    # every post-training plan measured is over the budget: training bought the fit
    post = [c for c in res.search.candidates if not c.state.training]
    assert min(c.size_bytes for c in post) > BUDGET
    # figures on the test rows; the trained plan keeps the source model's AUC within 0.03
    assert res.metrics_after["auc"] > res.metrics_before["auc"] - 0.03, (res.metrics_before, res.metrics_after)
    # the manifest's plan replays to the same bytes
    plan = plan_from_json(ecr.load(res.path).manifest["plan"])
    assert plan == res.plan
    model, train_ds, test_ds, _ = small
    again = ec.compile(model, target="local", data=test_ds, train_data=train_ds, output=tmp_path / "again.ecb",
                       plan=plan, formats=["numpy"], seed=0, progress=False)
    assert _arrays(again.path) == _arrays(res.path)
    # the report: what each move bought (bytes, Δmetric) and cost (seconds)
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    moves = {m["move"]: m for m in rep["search"]["training"]["moves"]}
    assert set(moves) == {m.name for m in MOVES}
    t = moves[trained[-1].move]
    assert t["bytes"] == trained[-1].bytes <= BUDGET and t["train_s"] > 0 and t["delta_metric"] is not None
    assert t["ratio_vs_fp32"] > 20
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "Training-aware moves" in html and trained[-1].move in html


def test_without_a_train_budget_the_same_budget_names_the_option(small, tmp_path):
    """Through the CLI: exit code 3 (BudgetError) and the message says what --train-budget would do."""
    model, train_ds, test_ds, where = small
    from edgecompress.data import save_npz
    torch.save(model.state_dict(), tmp_path / "w.pt")
    save_npz(test_ds, tmp_path / "test.npz")
    save_npz(train_ds, tmp_path / "train.npz")
    r = subprocess.run([str(BIN / "edgecompress"), "compile", "--model", "smallmodel:make", "--weights", "w.pt",
                        "--data", "test.npz", "--train-data", "train.npz", "-o", "m.ecb", "--target", "local",
                        "--memory-budget", f"{BUDGET}B", "--formats", "numpy", "--seed", "0", "--quiet"],
                       capture_output=True, text=True, cwd=tmp_path,
                       env={"PYTHONPATH": str(where), "PATH": str(BIN), "HOME": str(tmp_path)})
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr and "no plan fits" in r.stderr and "--train-budget" in r.stderr
    assert not (tmp_path / "m.ecb").exists()


def test_a_tiny_budget_stops_after_the_first_move_and_says_so(small, tmp_path):
    res = _compile(small, tmp_path / "tiny.ecb", train_budget=0.2)
    rec = res.search.training
    trained = [r for r in rec.runs if r.status == "trained"]
    assert len(trained) == 1 and trained[0].rows == MIN_STEPS * 1024
    assert res.plan == trained[0].plan and res.size_bytes <= BUDGET
    others = [r for r in rec.runs if r is not trained[0]]
    if rec.fp32["metric"] - trained[0].metric <= 5e-4:
        # four steps already brought it within compile's tolerance of fp32 (it happens on some thread
        # timings): the stage stops there, and the rest are not needed rather than out of budget
        assert "fits the budgets within" in rec.stopped
        assert all(r.status == "skipped" for r in others)
        return
    untried = [r.move for r in others if r.status == "not tried"]
    assert untried and "training budget is spent" in rec.stopped and all(m in rec.stopped for m in untried)
    assert any("training budget is spent" in w for w in res.warnings)


def test_train_budget_flag_and_durations(capsys):
    assert [parse_duration(x) for x in ("10m", "90s", "1.5h", "45", 45, "2min")] == [600, 90, 5400, 45, 45, 120]
    for bad in ("-1m", "0s", "10 parsecs", "m", True, float("inf")):
        with pytest.raises(TargetError, match="invalid duration"):
            parse_duration(bad)
    parser = build_parser()
    args = parser.parse_args(["compile", "--model", "dlrm", "--data", "synthetic", "-o", "x.ecb",
                              "--train-budget", "10m"])
    assert args.train_budget == "10m"       # the user's string; compile() parses it again
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["compile", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "--train-budget TIME" in out and "--train-budget 10m" in out.split("examples:")[1]
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["compile", "--model", "dlrm", "--data", "synthetic", "-o", "x.ecb",
                           "--train-budget", "10 parsecs"])
    assert e.value.code == 2 and "unknown unit 'parsecs'" in capsys.readouterr().err


def test_train_budget_is_ignored_without_training_rows_or_with_a_plan(small, tmp_path):
    """Post-training behaviour unchanged, and said: no training rows, or a plan given (nothing searched)."""
    from edgecompress.compile.request import build_request
    model, train_ds, test_ds, _ = small
    args = dict(target="local", data=test_ds, output=tmp_path / "n.ecb", memory_budget=None, latency_budget=None,
                metric=None, metric_output=None, input_spec=None, valid_data=None, test_data=None, seed=0,
                oov_rows=None, report=None, tolerance=5e-4, formats=["numpy"], progress=False, latency_table=None)
    req = build_request(model, plan=None, train_data=None, train_budget="1m", **args)
    assert req.train_budget is None and "train_budget ignored: no training rows (train_data=...)" in req.notes
    assert build_request(model, plan=None, train_data=train_ds, train_budget="1m", **args).train_budget == 60
    res = ec.compile(model, target="local", data=test_ds, train_data=train_ds, output=tmp_path / "p.ecb", plan=[],
                     formats=["numpy"], progress=False, train_budget="1m")
    assert res.search is None and any("train_budget ignored: a plan was given" in w for w in res.warnings)
