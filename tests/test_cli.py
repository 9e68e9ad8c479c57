"""The command line in the ecosystem's manner (issue 12): --version, help on a bare command,
examples in every verb's help, contradictory flags and unit-less sizes refused, a closed pipe
that is not a traceback, toolchain chatter in a log file, and one table of exit codes."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

import edgecompress
import edgecompress_runtime
from edgecompress import errors
from edgecompress.cli import build_parser, main

BIN = Path(sys.executable).parent
EXE = str(BIN / "edgecompress")


def run(*argv, **kw):
    return subprocess.run([EXE, *argv], capture_output=True, text=True, timeout=300, **kw)


def verbs() -> list[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "cmd")
    return sorted(sub.choices)


def help_of(verb: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    assert e.value.code == 0
    return out.getvalue()


def test_version_names_both_packages():
    r = run("--version")
    assert r.returncode == 0, r.stderr
    assert f"edgecompress {edgecompress.__version__}" in r.stdout
    assert f"edgecompress-runtime {edgecompress_runtime.__version__}" in r.stdout


def test_bare_command_prints_the_help_and_exits_0():
    r = run()
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.startswith("usage: edgecompress") and "compile" in r.stdout and "examples:" in r.stdout


def test_every_verb_has_examples_at_the_end_of_its_help():
    names = verbs()
    assert {"demo", "targets", "compile", "package", "deploy", "bench", "farm", "keys", "calibrate"} <= set(names)
    for verb in names:
        text = help_of(verb)
        tail = text[text.index("examples:"):] if "examples:" in text else ""
        assert tail, f"`edgecompress {verb} --help` has no examples"
        assert f"edgecompress {verb}" in tail and "options:" not in tail, (verb, tail)


@pytest.mark.parametrize("flags", [["--fp32", "--int8"], ["--int8", "--plan", "p.json"], ["--plan", "p.json", "--fp32"]])
def test_contradictory_plan_flags_are_refused(flags, tmp_path):
    r = run("compile", "--model", "dlrm", "--data", "synthetic", "-o", "m.ecb", *flags, cwd=tmp_path)
    assert r.returncode == 2 and "not allowed with argument" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "m.ecb").exists()


def test_contradictory_signing_and_device_flags_are_refused():
    err = io.StringIO()
    for argv in (["deploy", "--device", "x@h", "--no-sign", "--add-trusted-key"],
                 ["farm", "a.ecb", "--device", "x@h", "--tags", "lab"]):
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    assert err.getvalue().count("not allowed with argument") == 2


def test_a_size_without_unit_is_refused_naming_the_units(tmp_path):
    r = run("compile", "--model", "dlrm", "--data", "synthetic", "-o", "m.ecb", "--memory-budget", "8", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "'8' has no unit" in r.stderr and "8MB" in r.stderr and "KiB" in r.stderr and "8B for bytes" in r.stderr


@pytest.mark.parametrize("size", ["8MB", "512KiB", "335154B", "1.5MB", "20KB"])
def test_sizes_with_units_parse_as_written(size):
    args = build_parser().parse_args(["compile", "--model", "dlrm", "--data", "synthetic", "-o", "m.ecb",
                                      "--memory-budget", size])
    assert args.memory_budget == size


def _closed_early(*argv) -> subprocess.CompletedProcess:
    """Run with stdout a pipe whose reader is gone before the command prints (as `| head` does)."""
    p = subprocess.Popen([EXE, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdout.close()            # long before the interpreter has started and printed anything
    err = p.stderr.read()
    return subprocess.CompletedProcess(p.args, p.wait(timeout=120), "", err)


@pytest.mark.parametrize("argv", [["targets", "--json"], ["targets"], ["compile", "--help"]])
def test_a_closed_pipe_is_not_a_traceback(argv):
    r = _closed_early(*argv)
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
    assert r.returncode in (0, 141)
    # through a real shell pipeline too
    sh = subprocess.run(f"{EXE} {' '.join(argv)} | head -c 10", shell=True, capture_output=True, text=True)
    assert len(sh.stdout) == 10 and "Traceback" not in sh.stderr


def test_targets_prints_a_table_and_json():
    r = run("targets")
    assert r.returncode == 0
    head, rule, *rows = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert head.split()[:3] == ["name", "arch", "cores"] and set(rule.strip()) == {"─"}
    assert any(row.split()[0] == "raspberry-pi-4" and "16MB" in row for row in rows)
    assert "{" not in r.stdout
    r = run("targets", "--json")
    import json
    assert {t["name"] for t in json.loads(r.stdout)} >= {"raspberry-pi-4", "local"}


# ------------------------------------------------------------------------------------------ errors

def test_exit_codes_come_from_one_table():
    assert errors.exit_code(errors.BudgetError("x")) == 3
    assert errors.exit_code(errors.UnknownHostError("x")) == 15
    assert errors.exit_code(errors.NoBannerError("x")) == 13
    assert errors.exit_code(errors.DataError("x")) == 2
    assert errors.exit_code(errors.BundleError("x")) == 2        # the runtime's errors, one place to catch
    assert errors.exit_code(RuntimeError("a bug")) == 1

    class LaterError(errors.RemoteCommandError):                 # a class added later takes its base's code
        pass
    assert errors.exit_code(LaterError("x")) == 19 == LaterError.exit_code
    # every class's .exit_code (which scripts read) is the table's
    for name in errors.__all__:
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, errors.EdgecompressError):
            assert cls.exit_code == errors.exit_code(cls("x")), name
    # the classes that lived elsewhere are the same objects there
    from edgecompress.models.zoo import ModelError
    from edgecompress.plan.latency_table import LatencyTableError
    from edgecompress.plan.search import BudgetError
    assert (BudgetError, ModelError, LatencyTableError) == (errors.BudgetError, errors.ModelError,
                                                            errors.LatencyTableError)
    assert isinstance(errors.BundleError("x"), errors.ERRORS)


def test_errors_become_one_line_and_their_exit_code(tmp_path, capsys):
    assert main(["keys", "sign"]) == 2
    assert capsys.readouterr().err == "edgecompress: error: keys sign needs one or more bundles\n"
    assert main(["farm", "a.ecb"]) == 11                                      # InventoryError
    assert "farm needs --inventory" in capsys.readouterr().err
    assert main(["deploy", "--ssh-config", ""]) == 11                         # no --device
    assert "which board?" in capsys.readouterr().err
    bad = tmp_path / "bad.ecb"
    bad.write_bytes(b"PK\x03\x04 not a bundle")
    assert main(["package", str(bad), "--android", str(tmp_path / "a")]) == 2  # the runtime's BundleError
    err = capsys.readouterr().err
    assert err.startswith("edgecompress: error:") and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------ toolchain log

NOISY = """
import os, sys, warnings
from edgecompress.cli.output import toolchain_log, say_log
with toolchain_log("t", verbose={verbose}) as log:
    os.write(2, b"I0000 port.cc:153] C++ library noise\\n")
    warnings.warn("a FutureWarning from a library", FutureWarning)
    print("ours, for the user", file=log.terminal)
say_log(log)
print(log.path)
"""


def test_toolchain_chatter_goes_to_a_log_file(tmp_path):
    env = dict(os.environ, EDGECOMPRESS_CACHE=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", NOISY.format(verbose=False)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "ours, for the user" in r.stderr and "noise" not in r.stderr and "FutureWarning" not in r.stderr
    log = Path(r.stdout.strip())
    assert log.parent == tmp_path / "logs" and log.name.startswith("t-")
    assert f"are in {log}" in r.stderr
    text = log.read_text()
    assert "C++ library noise" in text and "a FutureWarning from a library" in text
    r = subprocess.run([sys.executable, "-c", NOISY.format(verbose=True)], capture_output=True, text=True, env=env)
    assert "C++ library noise" in r.stderr and "FutureWarning" in r.stderr and r.stdout.strip() == "None"


def test_compile_prints_tables_not_reprs(tmp_path):
    env = dict(os.environ, EDGECOMPRESS_CACHE=str(tmp_path / "cache"))
    r = run("compile", "--model", "dlrm", "--data", "synthetic", "-o", "m.ecb", "--int8", "--formats", "numpy",
            "--quiet", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert "{'" not in out and "': " not in out                              # no dict reprs
    lines = out.splitlines()
    assert lines[0].startswith("wrote m.ecb (") and "for raspberry-pi-4" in lines[0]
    plan = next(i for i, ln in enumerate(lines) if ln.split()[:3] == ["#", "pass", "settings"])
    assert lines[plan + 2].split()[:2] == ["1", "embedding_rowwise_quant"] and "bits=8" in lines[plan + 2]
    assert lines[plan + 3].split()[:2] == ["2", "linear_int8_weights"]
    assert any(ln.split()[:4] == ["metric", "before", "after", "change"] for ln in lines)
    assert any(ln.split()[0:1] == ["auc"] and len(ln.split()) == 4 for ln in lines)
    assert any(ln.split()[0:1] == ["numpy"] and ln.split()[1].replace(",", "").isdigit() for ln in lines)
    assert "parity: vs the compressed program" in out
