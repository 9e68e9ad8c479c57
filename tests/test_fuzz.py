"""Fuzzing the loader (issue 13): >= 500 mutants of a real bundle, every class of attack the issue
lists, each through load -> predict -> parity -> info in a child process with an address-space
limit and a time limit. Zero crashes, hangs, escapes from our error types, bad messages, or
memory errors (a peak above the limit). The generator and runner are shared with
benchmarks/fuzz.py (>= 1,000 mutants and a table in benchmarks/results/fuzz.json)."""
from __future__ import annotations

import os

import pytest

import fuzz_mutants
import fuzz_runner

N = int(os.environ.get("EDGECOMPRESS_FUZZ_MUTANTS", "520"))


@pytest.fixture(scope="module")
def fuzz_bundle(tmp_path_factory):
    """A small real bundle with quantized tables (rowwise, remap) and int8 linears: more to attack.
    No app artifacts (exporting them takes a minute): the artifact class forges .tflite / .pte
    entries, which LiteRT / ExecuTorch then parse."""
    import torch

    import edgecompress as ec
    from edgecompress.data import synthetic_ctr
    from edgecompress.models.zoo import model_for_data
    from edgecompress.passes import DEFAULT_PLAN
    from edgecompress.train import train
    data = synthetic_ctr(n=3000, vocab_sizes=(300, 200, 100), dense_dim=4, seed=3)
    tr, te = data.split((0.8, 0.2), seed=0)
    torch.manual_seed(0)
    model = model_for_data("dlrm", tr, embedding_dim=8, bottom_mlp=(16,), top_mlp=(16,))
    train(model, tr, epochs=1, batch_size=512, lr=3e-3, progress=False)
    out = tmp_path_factory.mktemp("fuzz")
    return ec.compile(model, target="local", data=te, output=out / "int8.ecb", plan=list(DEFAULT_PLAN),
                      progress=False).path


def test_500_mutants_never_crash_hang_or_escape(fuzz_bundle, tmp_path):
    items = fuzz_mutants.generate(fuzz_bundle, N, tmp_path, seed=13)
    results = fuzz_runner.run(items, workers=2, per_child=(N + 1) // 2)
    table = fuzz_runner.table(results)
    assert len(results) == N >= 500
    assert set(table) == set(fuzz_mutants.CLASSES)                 # every class ran
    bad = [(r["cls"], r["label"], r["outcome"], r.get("detail", "")[:200]) for r in results
           if r["outcome"] in fuzz_runner.FAILURES]
    assert not bad, bad
    # what each class must come to: refused (hostile containers) or at most loaded (benign edits)
    for cls in ("corruption", "pickle", "traversal", "zip_bomb", "symlink", "duplicate", "version", "deep_json"):
        assert table[cls]["refused"] == sum(table[cls].values()), (cls, table[cls])
    assert table["graph"]["refused"] >= 0.8 * sum(table["graph"].values())
    assert table["artifact"]["loaded"] + table["artifact"]["refused"] == sum(table["artifact"].values())
    # memory: no mutant took the child more than the stated limit above its baseline
    assert max(r.get("peak_extra_mb", 0) for r in results) < fuzz_runner.MEMORY_LIMIT / 2**20
