"""The README's examples, executed as written (issue 11).

* Every ```python block of README.md runs, in order, in one shared namespace, in a temporary
  working directory (the on-device block opens the "dlrm.ecb" the first block writes). The names a
  block expects from its reader (``dense``, ``sparse``, ``candidate_ids``, a library model's columns
  and rows) are supplied by clearly marked SETUP steps below -- derived from the bundle's input spec
  or built with the library's own API -- and the block's text is never edited.
* Every command line of the README (a 4-space-indented line outside ``` fences starting with
  ``edgecompress``, ``edgecompress-runtime`` or ``make``; a trailing backslash continues it) is either
  run as written in that directory (RUN) or listed in SKIP with the reason. A command matching neither,
  or a rule matching no README line any more, fails ``test_every_readme_command_is_run_or_skipped``.
* Every flag a README or docs/*.md command line mentions exists in that verb's ``--help``.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
BIN = Path(sys.executable).parent
PROGRAMS = ("edgecompress", "edgecompress-runtime", "make")


# ------------------------------------------------------------------------------------------- parsing

def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def indented_blocks(text: str) -> list[list[str]]:
    """4-space-indented code blocks outside ``` fences, as lists of lines (indent removed)."""
    blocks, cur, fence = [], None, False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        if not fence and line.startswith("    ") and not line.startswith("```"):
            cur = [] if cur is None else cur
            cur.append(line[4:])
            continue
        if cur is not None and not line.strip():
            cur.append("")
            continue
        if cur is not None:
            blocks.append(cur)
            cur = None
    if cur is not None:
        blocks.append(cur)
    return blocks


def command_lines(text: str) -> list[str]:
    """The command lines of a markdown file: continuation lines joined, shell comments dropped,
    whitespace normalised."""
    out = []
    for block in indented_blocks(text):
        buf = None
        for line in block:
            if buf is None:
                if not line.strip() or line.split()[0] not in PROGRAMS or line.startswith(" "):
                    continue
                buf = line.strip()
            else:
                buf += " " + line.strip()
            if buf.endswith("\\"):
                buf = buf[:-1]
                continue
            out.append(" ".join(re.sub(r"\s#.*$", "", buf).split()))
            buf = None
    return out


README_TEXT = README.read_text()
COMMANDS = command_lines(README_TEXT)
BLOCKS = python_blocks(README_TEXT)


# ------------------------------------------------------------------------------- what runs, what not

def check_info(r, cwd):
    size = (cwd / "dlrm.ecb").stat().st_size
    assert f"bundle   dlrm.ecb ({size:,} bytes" in r.stdout, r.stdout
    assert "input    dense: float32[B, 13]" in r.stdout, r.stdout
    m = re.search(r"input    sparse: int64\[B, (\d+)\] vocab \[([\d, ]+)\]", r.stdout)
    assert m and len(m.group(2).split(",")) == int(m.group(1)) == 8, r.stdout
    assert "target   raspberry-pi-4" in r.stdout and "embedding_rowwise_quant" in r.stdout, r.stdout


def check_bench(r, cwd):
    import json
    res = json.loads((cwd / "bench.json").read_text())
    assert res["parity"]["ok"] and res["parity"]["max_abs_diff"] <= 1e-4, res["parity"]
    lat = {row["batch"]: row for row in res["latency"]}
    assert sorted(lat) == [1, 64, 256]
    for row in lat.values():
        assert row["iters"] >= 200
        assert 0 < row["min_ms"] <= row["p50_ms"] <= row["p99_ms"] < 10_000, row
        assert row["throughput_rows_per_s"] > 0
    assert 10 < res["peak_rss_mb"] < 4096
    for b in (1, 64, 256):      # the table printed to the terminal has one row per batch size
        assert re.search(rf"^\s+{b}\s+\d+\.\d+", r.stdout, re.M), r.stdout


def check_targets(r, cwd):
    assert "raspberry-pi-4" in r.stdout, r.stdout
    assert len([ln for ln in r.stdout.splitlines() if ln.strip()]) >= 2


def check_keys_init(r, cwd):
    keys = cwd / "keys"         # EDGECOMPRESS_KEYS_DIR of test_readme_command (cwd is its tmp_path)
    made = [p for p in keys.rglob("*") if p.is_file()]
    assert made, f"`edgecompress keys init` wrote nothing under EDGECOMPRESS_KEYS_DIR: {r.stdout}{r.stderr}"
    from edgecompress.deploy.keys import load_key
    key = load_key(keys)
    assert key.key_id and key.key_id in r.stdout + r.stderr


# fullmatch patterns over the normalised command lines of README.md
RUN = {
    r"edgecompress-runtime info dlrm\.ecb": check_info,
    r"edgecompress-runtime bench dlrm\.ecb --batch 1,64,256 --warmup 20 --iters 200 --json bench\.json": check_bench,
    r"edgecompress targets": check_targets,
    r"edgecompress keys init": check_keys_init,     # into a key directory of its own (EDGECOMPRESS_KEYS_DIR)
}
SKIP = {
    r"make demo": "sets up .venv on a fresh machine and runs `edgecompress demo` for minutes; "
                  "tests/test_demo_cli.py runs that demo",
    r"make test": "sets up the machine (as root: sshd, nftables, chromium, an emulated arm64 board) and "
                  "runs the whole suite, this test included",
    r"edgecompress demo \[.*\]": "a synopsis with [optional] flags; tests/test_demo_cli.py runs the demo "
                                 "(minutes). Its flags are checked against --help",
    r"edgecompress compile --model MODULE:FACTORY\|ZOO_NAME .*": "a synopsis with placeholders (MODULE:FACTORY, "
                                                                "DATA, OUT.ecb); its flags are checked against --help",
    r"edgecompress calibrate --device NAME\|user@host\|local.*": "a synopsis with placeholders; calibrating a device "
                                                                 "takes minutes (device_tests/test_arm64.py). "
                                                                 "Its flags are checked against --help",
    r"edgecompress .* --device pi@raspberrypi\.local( .*)?": "needs a real Raspberry Pi at pi@raspberrypi.local; "
                                                            "tests/test_deploy_*.py run these verbs against "
                                                            "OpenSSH boards",
    r"edgecompress farm a\.ecb b\.ecb --inventory devices\.toml --tags lab": "needs the boards of the README's "
                                                                            "devices.toml (10.0.0.21); "
                                                                            "tests/test_farm.py runs farm "
                                                                            "against OpenSSH boards",
}


def classify(cmd: str) -> list[tuple[str, object]]:
    found = [("run", fn) for pat, fn in RUN.items() if re.fullmatch(pat, cmd)]
    found += [("skip", why) for pat, why in SKIP.items() if re.fullmatch(pat, cmd)]
    return found


def test_every_readme_command_is_run_or_skipped():
    assert len(COMMANDS) >= 10, COMMANDS          # the parser still finds the README's command lines
    for cmd in COMMANDS:
        got = classify(cmd)
        assert len(got) == 1, (f"README command {cmd!r} is {'listed twice' if got else 'neither run nor skipped'}: "
                               "add it to RUN or SKIP in tests/test_readme.py")
    for pat in [*RUN, *SKIP]:
        assert any(re.fullmatch(pat, c) for c in COMMANDS), f"rule {pat!r} matches no README command any more"


def test_every_python_block_is_run():
    assert len(BLOCKS) == 3, ("README.md's ```python blocks changed: give each a test in tests/test_readme.py",
                              [b.splitlines()[0] for b in BLOCKS])
    assert "ec.compile(model, target=" in BLOCKS[0] and "synthetic_ctr" in BLOCKS[0]
    assert "import edgecompress_runtime as ecr" in BLOCKS[1] and ".topk(" in BLOCKS[1]
    assert "deepctr_torch" in BLOCKS[2]


# ------------------------------------------------------------------------------------ python blocks

def run_block(src: str, ns: dict, cwd: Path, name: str) -> str:
    """exec one README block in ``ns`` with ``cwd`` as working directory; returns what it printed."""
    out = io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(src, f"README.md:{name}", "exec"), ns)
    finally:
        os.chdir(old)
    sys.stdout.write(out.getvalue())
    return out.getvalue()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("readme")


@pytest.fixture(scope="module")
def first_block(workdir):
    """README's "Use it from Python" block, as written (50k rows, 2 epochs, a searched compile)."""
    ns = {"__name__": "__readme__"}
    t0 = time.perf_counter()
    printed = run_block(BLOCKS[0], ns, workdir, "python-1")
    return {"ns": ns, "printed": printed, "seconds": time.perf_counter() - t0}


def test_python_example_trains_and_compiles(first_block, workdir):
    ns, printed = first_block["ns"], first_block["printed"]
    result, train_ds, valid_ds, test_ds = ns["result"], ns["train_ds"], ns["valid_ds"], ns["test_ds"]
    assert (len(train_ds), len(valid_ds), len(test_ds)) == (40_000, 5_000, 5_000)
    # what it prints: size, metrics before, after, vs source
    line = printed.strip().splitlines()[-1]
    size = int(line.split()[0])
    assert size == result.size_bytes == (workdir / "dlrm.ecb").stat().st_size > 0
    for d in (result.metrics_before, result.metrics_after, result.vs_source):
        assert repr(d) in line
    assert result.param_bytes["compressed"] < result.param_bytes["fp32"]
    assert 0 < result.model_bytes <= result.budgets["memory_bytes"]
    before, after = result.metrics_before, result.metrics_after
    assert before["n"] == after["n"] == len(test_ds)                      # figures on the test rows
    assert 0.65 < before["auc"] < 1 and 0.65 < after["auc"] < 1, (before, after)   # the DLRM learned
    assert after["auc"] >= before["auc"] - 0.01, (before, after)
    assert 0 < after["logloss"] < 0.69
    assert result.data_roles["validation"] == "valid_data" and result.data_roles["test"] == "data"
    assert set(result.vs_source) == {"numpy"}                             # EDGECOMPRESS_FORMATS=numpy
    vs = result.vs_source["numpy"]
    assert vs["rows"] == 1000 and 0 <= vs["mean_abs_diff"] <= vs["max_abs_diff"] < np.inf
    assert result.parity["ok"] and result.parity["max_abs_diff"] <= 1e-4, result.parity


@pytest.fixture(scope="module")
def two_tower(workdir):
    """SETUP for the on-device block's "two_tower.ecb": examples/movielens_two_tower.py, which the
    README names as its source, run with --out two_tower.ecb (and 1 epoch instead of 3, for time)."""
    from edgecompress.data.movielens_files import recbole_wheel
    try:
        recbole_wheel()
    except Exception as e:            # offline and not cached
        pytest.skip(f"MovieLens-100k is not available here: {e}")
    spec = importlib.util.spec_from_file_location("movielens_two_tower", ROOT / "examples" / "movielens_two_tower.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out, old = io.StringIO(), os.getcwd()
    os.chdir(workdir)
    try:
        with contextlib.redirect_stdout(out):
            res = mod.main(["--out", "two_tower.ecb", "--epochs", "1"])
    finally:
        os.chdir(old)
    sys.stdout.write(out.getvalue())
    return {"result": res, "printed": out.getvalue()}


def test_movielens_example_prints_top10(two_tower, workdir):
    res, printed = two_tower["result"], two_tower["printed"]
    assert (workdir / "two_tower.ecb").stat().st_size > 0
    assert "top-10 for user 42" in printed
    ranks = re.findall(r"^\s+(\d+)\. item (\S+)\s+score ([+-]\d+\.\d+)$", printed, re.M)
    assert [int(r[0]) for r in ranks] == list(range(1, 11)), printed
    top, scores, seen = res["top"], res["scores"], set(res["seen"])
    assert len(set(top)) == 10 and not seen & set(top) and all(0 <= i < 1682 for i in top)
    assert scores == sorted(scores, reverse=True)
    # recall@10 of 943 users over 1682 items: random is ~0.006
    assert 0.03 < res["metrics_after"]["recall@10"] <= 1
    assert res["metrics_after"]["recall@10"] >= res["metrics_before"]["recall@10"] - 0.02


def test_on_device_example(first_block, two_tower, workdir):
    import edgecompress_runtime as ecr
    ns = first_block["ns"]
    # ---- SETUP: the names the block takes from its reader -------------------------------------------
    # dense / sparse: rows shaped as dlrm.ecb's input spec says; the bundle's own reference rows,
    # so the block's logits can be checked against the host's outputs.
    bundle = ecr.load(workdir / "dlrm.ecb")
    spec = {s["name"]: s for s in bundle.input_spec}
    assert set(spec) == {"dense", "sparse"}
    ref_in, ref_out = bundle.reference()
    for name, arr in ref_in.items():
        assert str(arr.dtype) == spec[name]["dtype"] and arr.ndim == len(spec[name]["shape"])
        assert all(s is None or s == a for s, a in zip(spec[name]["shape"], arr.shape))
    ns["dense"], ns["sparse"] = ref_in["dense"], ref_in["sparse"]
    # candidate_ids: every item of two_tower.ecb's item_id vocabulary
    tt_spec = {s["name"]: s for s in ecr.load(workdir / "two_tower.ecb").input_spec}
    assert set(tt_spec) == {"user_id", "item_id"}
    n_items = tt_spec["item_id"]["vocab"][0]
    ns["candidate_ids"] = np.arange(n_items)
    # ---- the block, as written -------------------------------------------------------------------------
    run_block(BLOCKS[1], ns, workdir, "python-2")

    logits = ns["logits"]
    assert logits.shape == (len(ns["dense"]),) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, ref_out.reshape(-1), atol=1e-4)
    top, scores = ns["top"], ns["scores"]
    assert len(top) == 10 and len(set(top.tolist())) == 10
    assert set(top.tolist()) <= set(ns["candidate_ids"].tolist())
    assert np.all(np.diff(scores) <= 0)
    retrieval = ns["retrieval"]
    every = retrieval.predict({"user_id": np.full(n_items, 7), "item_id": ns["candidate_ids"]})
    np.testing.assert_allclose(scores, np.sort(every)[::-1][:10], rtol=1e-6)   # truly the best 10
    np.testing.assert_allclose(scores, every[top], rtol=1e-6)


def test_library_model_example(first_block, workdir):
    """README's deepctr-torch block. Its ``# ... trained with the library`` marks an elision: the
    SETUP below fills it with the library's own ``compile`` + ``fit``, then builds the held-out and
    training X the way deepctr's ``predict`` / ``fit`` feed ``forward`` (tests/compat/models.py)."""
    models = pytest.importorskip("tests.compat.models", reason="the compat extra is not installed")
    if not importlib.util.find_spec("deepctr_torch"):
        pytest.skip("deepctr-torch is not installed (pip install -e '.[compat]')")
    import torch
    import edgecompress_runtime as ecr
    ns = dict(first_block["ns"])            # `ec` comes from the first block
    # ---- SETUP: feature columns as deepctr's criteo example declares them ---------------------------
    models._import_deepctr()                # no version check over the network on import
    rows = models.tabular_data()
    sparse, dense = models._deepctr_columns()
    ns["linear_cols"], ns["dnn_cols"] = sparse + dense, sparse + dense
    torch.manual_seed(0)
    # ---- the block, split at its elision -------------------------------------------------------------
    lines = BLOCKS[2].splitlines(keepends=True)
    cut = next(i for i, ln in enumerate(lines) if "# ..." in ln) + 1
    run_block("".join(lines[:cut]), ns, workdir, "python-3a")
    # ---- SETUP: "... trained with the library" ----------------------------------------------------
    model = ns["model"]
    tr, ho = models._split(rows)
    model.compile("adam", "binary_crossentropy")
    with contextlib.redirect_stdout(io.StringIO()):
        model.fit({k: v for k, v in tr.items() if k != "label"}, tr["label"], batch_size=256, epochs=2, verbose=0)
    model.eval()
    ns["X_heldout"], ns["y_heldout"] = models._deepctr_X(model, ho), ho["label"]
    ns["X_train"], ns["y_train"] = models._deepctr_X(model, tr), tr["label"]
    # ---- the rest of the block, as written -------------------------------------------------------------
    run_block("".join(lines[cut:]), ns, workdir, "python-3b")

    m = ecr.load(workdir / "deepfm.ecb")
    assert m.manifest["target"]["name"] == "raspberry-pi-4" and m.manifest["plan"]
    assert [o["form"] for o in m.outputs] == ["probability"]
    X = ns["X_heldout"][:512]
    got = np.asarray(m.predict({"X": X})).reshape(-1)
    with torch.no_grad():
        want = model(torch.from_numpy(X)).numpy().reshape(-1)
    assert np.all((got >= 0) & (got <= 1))
    assert np.abs(got - want).mean() < 0.05, np.abs(got - want).mean()
    host = m.manifest["metrics"]["host"]
    assert 0.6 < host["before"]["auc"] < 1 and host["after"]["auc"] >= host["before"]["auc"] - 0.01, host


# -------------------------------------------------------------------------------------- command lines

@pytest.mark.parametrize("cmd", COMMANDS, ids=[c[:70] for c in COMMANDS])
def test_readme_command(cmd, request, tmp_path):
    got = classify(cmd)
    assert len(got) == 1, f"{cmd!r}: neither run nor skipped (see test_every_readme_command_is_run_or_skipped)"
    kind, what = got[0]
    if kind == "skip":
        pytest.skip(what)
    # the bundle commands run where the Python example wrote dlrm.ecb
    cwd = tmp_path
    if "dlrm.ecb" in cmd:
        request.getfixturevalue("first_block")
        cwd = request.getfixturevalue("workdir")
    # `keys init` writes a key: into a directory of this test's own, never the session's or the user's
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               EDGECOMPRESS_KEYS_DIR=str(tmp_path / "keys"))
    r = subprocess.run(shlex.split(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (cmd, r.stdout[-2000:], r.stderr[-3000:])
    what(r, cwd)


# ------------------------------------------------------------------------- flags exist in --help

def _doc_commands():
    out = [("README.md", c) for c in COMMANDS]
    for p in DOCS:
        out += [(f"docs/{p.name}", c) for c in command_lines(p.read_text())]
    return [(src, c) for src, c in out if c.split()[0] != "make"]


@functools.lru_cache(maxsize=None)
def help_text(prog: str, verb: str) -> str:
    mod = "edgecompress.cli" if prog == "edgecompress" else "edgecompress_runtime.cli"
    main = importlib.import_module(mod).main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            main([verb, "--help"])
        except SystemExit as e:
            assert e.code == 0, f"`{prog} {verb} --help` exits {e.code}: no such verb?"
    return out.getvalue()


DOC_COMMANDS = _doc_commands()


@pytest.mark.parametrize("src,cmd", DOC_COMMANDS, ids=[f"{s}:{c[:60]}" for s, c in DOC_COMMANDS])
def test_command_flags_exist(src, cmd):
    prog, verb = cmd.split()[:2]
    text = help_text(prog, verb)
    flags = re.findall(r"(?:^|[\s\[|])(--?[A-Za-z][\w-]*)", cmd)
    missing = [f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)]
    assert not missing, f"{src}: `{cmd}` uses {missing}, which `{prog} {verb} --help` does not list"


def test_readme_devices_toml_loads(tmp_path):
    """The README's devices.toml example is a valid inventory for the farm command next to it."""
    from edgecompress.deploy.inventory import load_inventory
    from edgecompress.targets import load_target
    block = next(b for b in indented_blocks(README_TEXT) if b and b[0].strip() == "[[device]]")
    (tmp_path / "devices.toml").write_text("\n".join(block) + "\n")
    inv = load_inventory(tmp_path / "devices.toml")
    dev = inv.get("pi-1")
    assert (dev.host, dev.user, dev.target) == ("10.0.0.21", "pi", "raspberry-pi-4") and "lab" in dev.tags
    load_target(dev.target)
