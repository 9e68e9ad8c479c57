"""One cost-model interface (plan/cost.py): the profile's coefficients and a device's measured
table both answer ``estimate`` / ``gather_s`` / ``linear_s``, and the planner scores its moves
with the model that estimates its plans, so a measured table guides the moves too."""
from __future__ import annotations

import numpy as np
import pytest
from test_calibration import synthetic_table

from edgecompress.plan.cost import CostModel, ProfileCosts, TableLayout
from edgecompress.plan.latency import LatencyModel, SlowestBackend, shape_profile
from edgecompress.plan.latency_table import LatencyTable
from edgecompress.plan.measured_cost import MeasuredCosts
from edgecompress.targets import load_target


@pytest.fixture(scope="module")
def program():
    import torch

    from edgecompress.data import synthetic_ctr
    from edgecompress.graph import forward_input_names, lower
    from edgecompress.models.zoo import model_for_data
    data = synthetic_ctr(n=400, vocab_sizes=(500, 100, 20), dense_dim=4, seed=1)
    torch.manual_seed(1)
    model = model_for_data("dlrm", data, embedding_dim=8, bottom_mlp=(16, 8), top_mlp=(16,)).eval()
    return lower(model, {k: np.asarray(data.inputs[k][:8]) for k in forward_input_names(model)})


def test_the_layout_a_plan_names_is_the_layout_the_pass_makes(program):
    from edgecompress.passes import EmbeddingDimReduce, EmbeddingRowwiseQuant, apply_plan
    name = max(program.tables(), key=lambda t: program.params[t].shape[0])
    rows, full = program.params[name].shape
    assert TableLayout.of_param(program.params[name]) == TableLayout.planned(rows, full)
    q = apply_plan(program.copy(), [EmbeddingRowwiseQuant(bits=4, tables=(name,))])
    assert TableLayout.of_param(q.params[name]) == TableLayout.planned(rows, full, bits=4)
    d = apply_plan(program.copy(), [EmbeddingDimReduce(dim=4, tables=(name,))])
    assert TableLayout.of_param(d.params[name]) == TableLayout.planned(rows, full, dim=4)


def test_both_cost_models_answer_the_same_questions(program):
    tgt, prof = load_target("local"), shape_profile(program)
    table = LatencyTable(synthetic_table())
    measured, coeff = LatencyModel(tgt, prof, table=table), LatencyModel(tgt, prof)
    assert isinstance(measured.costs, MeasuredCosts) and isinstance(coeff.costs, ProfileCosts)
    assert measured.measured and not coeff.measured
    fp32, int4 = TableLayout.planned(100_000, 64), TableLayout.planned(100_000, 64, bits=4)
    # the table: its own measurement; a 4-bit gather dequantizes rows (3x an fp32 gather in this table)
    assert measured.gather_s(fp32, 100) == pytest.approx(1e-6 * 100 * 8)
    assert measured.gather_s(int4, 100) == pytest.approx(3 * measured.gather_s(fp32, 100))
    assert measured.linear_s(64, 100, "fp32", 8) == pytest.approx(1e-9 * 64 * 100 * 8)
    # the coefficients: fewer bytes read, plus 2 flops per value to dequantize
    c = tgt.cost
    assert coeff.gather_s(int4, 100) == pytest.approx(100 * (64 / 2 + 4) / c["gather_bytes_per_s"] +
                                                      2 * 100 * 64 / c["fp32_macs_per_s"])
    assert coeff.linear_s(64, 100, "fp32", 8) == pytest.approx(8 * 64 * 100 / c["fp32_macs_per_s"])
    assert coeff.estimate(program, 8)["source"] == "profile coefficients"
    # the budget over every shipped backend is a CostModel too, its blocks the numpy model's
    slowest = SlowestBackend(tgt, prof, table=table, backends=("numpy", "litert"))
    assert isinstance(slowest, CostModel) and list(slowest.models) == ["numpy"]
    assert slowest.gather_s(int4, 100) == measured.gather_s(int4, 100)
    assert slowest.estimate(program, 8)["total_s"] == pytest.approx(measured.estimate(program, 8)["total_s"])


def test_the_planner_scores_moves_with_the_measured_table(program):
    from edgecompress.plan.search import Planner, TableState
    from edgecompress.plan.states import PlanState
    tgt, prof = load_target("local"), shape_profile(program)
    name = max(program.tables(), key=lambda t: program.params[t].shape[0])

    def saving(latency, **move):
        planner = Planner(program, metric="auc", evaluate_fn=None, size_fn=None, latency=latency, latency_batch=64,
                          memory_budget=None, latency_budget=1e-3, progress=False)
        state = PlanState({t: TableState(bits=32) for t in planner.tables}, {}, "fp32")
        kind, value = next(iter(move.items()))
        return planner._latency_saving((kind, name, value), state, state.with_table(name, **move))

    table = LatencyTable(synthetic_table())
    # a small table is dequantized at load on the device: the table says fewer bits save no time,
    # where the coefficients count the bytes a gather no longer reads (and the dequantization it adds)
    assert saving(LatencyModel(tgt, prof, table=table), bits=8) == 0.0
    rows, full = program.params[name].shape
    coeff = LatencyModel(tgt, prof)
    n = 64 * prof.tables[name]
    assert saving(coeff, bits=8) == pytest.approx(coeff.gather_s(TableLayout.planned(rows, full), n) -
                                                  coeff.gather_s(TableLayout.planned(rows, full, bits=8), n))
