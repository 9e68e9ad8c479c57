"""Coverage-guided fuzzing of the bundle loader with atheris (libFuzzer), for runs longer than the
test suite's fixed mutants (tests/test_fuzz.py) and benchmarks/fuzz.py.

The runtime is instrumented; libFuzzer mutates one of three things per input, steered by the code
it reaches: the manifest's JSON text (the bundle rebuilt around it, signed when --signed), one
member's bytes (the manifest's hash of it recomputed, so the bytes reach the .npy / graph readers),
or the whole .ecb file. Each input goes through load -> predict(reference rows) -> check_parity ->
info in this process. Our errors (BundleError, BackendError, InputError) with a one-line message are
the expected refusals; any other exception, a multi-line message, a hang (-timeout) or memory above
-rss_limit_mb is reported by libFuzzer as a crash, with the input saved to --artifacts.

    make fuzz                                       # 10 minutes, results in benchmarks/results/
    .venv/bin/python benchmarks/fuzz_coverage.py --seconds 600 [--signed] [--bundle x.ecb]

libFuzzer runs in a child process (it never returns and exits the process): the parent writes
benchmarks/results/fuzz_coverage.json from the child's exit status and its counts (executions,
refusals by error, loads, findings saved, the run's conditions) and prints them.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "runtime"), str(ROOT), str(ROOT / "benchmarks")]
OUT = ROOT / "benchmarks" / "results" / "fuzz_coverage.json"
MAX_MESSAGE = 600

with atheris.instrument_imports(include=["edgecompress_runtime"]):
    from edgecompress_runtime import cli as runtime_cli
    from edgecompress_runtime import load
    from edgecompress_runtime.errors import BackendError, BundleError, InputError
    from edgecompress_runtime.signing import ENV_VAR

import fuzz_mutants  # noqa: E402  (tests/: the bundle (re)builders shared with the fixed-mutant fuzzing)

stats = {"executions": 0, "loaded": 0, "refused": Counter()}


class Target:
    """What one fuzz input becomes: a bundle file on tmpfs, rebuilt from the seed bundle."""

    def __init__(self, bundle: Path, work: Path, signed: bool):
        self.seed = bundle.read_bytes()
        with zipfile.ZipFile(bundle) as zf:
            self.manifest_text = zf.read("manifest.json")
        self.manifest, self.members = fuzz_mutants.members_of(bundle)
        self.names = sorted(self.members)
        self.key = fuzz_mutants.Key() if signed else None
        self.path = work / "fuzz.ecb"
        if self.key:
            (work / "trust").mkdir(exist_ok=True)
            (work / "trust" / "fuzz.pub").write_text(self.key.line)
            os.environ[ENV_VAR] = str(work / "trust")

    def bundle_from(self, data: bytes) -> bytes:
        # byte 0 picks what the rest of the input replaces (kept at the front so seeds stay readable)
        mode, rest = (data[0] % 3, data[1:]) if data else (2, b"")
        if mode == 0:      # the manifest's text
            return fuzz_mutants.build(self.manifest, self.members, key=self.key, raw_manifest=rest)
        if mode == 1:      # one member (byte 1 picks it), its hash recomputed so its reader is reached
            name = self.names[(rest[0] if rest else 0) % len(self.names)]
            return fuzz_mutants.build(self.manifest, dict(self.members, **{name: rest[1:]}), key=self.key)
        return rest        # the file as a whole


def one_input(target: Target, data: bytes, counts: Path) -> None:
    target.path.write_bytes(target.bundle_from(data))
    stats["executions"] += 1
    if stats["executions"] % 50 == 1:      # the parent reads these when libFuzzer has ended the child
        counts.write_text(json.dumps({**stats, "refused": dict(stats["refused"])}))
    try:
        m = load(target.path)
        inputs, _ = m.reference()
        m.predict(inputs)
        m.check_parity()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            rc = runtime_cli.main(["info", str(target.path)])
        if rc != 0:
            raise AssertionError(f"info exited {rc} on a bundle that loaded")
        stats["loaded"] += 1
    except (BundleError, BackendError, InputError) as e:
        text = str(e)
        if "\n" in text or len(text) > MAX_MESSAGE:
            raise AssertionError(f"{type(e).__name__} with a multi-line or long message: {text[:200]!r}") from e
        stats["refused"][type(e).__name__] += 1


def seed_corpus(target: Target, corpus: Path) -> None:
    """One seed per mode: the real manifest, the first member, the whole file."""
    corpus.mkdir(parents=True, exist_ok=True)
    (corpus / "manifest").write_bytes(b"\x00" + target.manifest_text)
    (corpus / "member").write_bytes(b"\x01\x00" + target.members[target.names[0]])
    (corpus / "file").write_bytes(b"\x02" + target.seed)


def write_results(args, seconds: float, counts: dict, status: int) -> dict:
    findings = sorted(p.name for p in args.artifacts.glob("*") if p.is_file())
    rec = {"schema": "edgecompress-fuzz-coverage/1", "seconds": round(seconds, 1),
           "executions": counts.get("executions", 0), "loaded": counts.get("loaded", 0),
           "refused": counts.get("refused", {}), "libfuzzer_exit": status, "findings": findings,
           "signed_store": args.signed, "rss_limit_mb": args.rss_limit_mb, "timeout_s": args.timeout,
           "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
           "load_average": os.getloadavg()[0]}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(rec, indent=1) + "\n")
    verdict = "no finding" if status == 0 and not findings else f"FINDINGS in {args.artifacts}: {findings}"
    print(f"\n{rec['executions']}+ inputs in {rec['seconds']} s: {rec['loaded']} loaded, refused "
          f"{rec['refused']}; {verdict}. {OUT}")
    return rec


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=600, help="how long to fuzz (default 600)")
    ap.add_argument("--bundle", type=Path, help="seed bundle (default: compile a small DLRM, numpy only)")
    ap.add_argument("--signed", action="store_true", help="sign every input and require signatures")
    ap.add_argument("--rss-limit-mb", type=int, default=2048)
    ap.add_argument("--timeout", type=int, default=20, help="seconds per input before it counts as a hang")
    ap.add_argument("--artifacts", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz_findings")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)   # internal: the work folder
    return ap.parse_args(argv)


def child(args) -> None:
    work = args.child
    target = Target(args.bundle, work, args.signed)
    seed_corpus(target, work / "corpus")
    atheris.Setup([sys.argv[0], str(work / "corpus"), f"-max_total_time={args.seconds}",
                   f"-rss_limit_mb={args.rss_limit_mb}", f"-timeout={args.timeout}",
                   f"-artifact_prefix={args.artifacts}/", "-print_final_stats=1"],
                  lambda data: one_input(target, data, work / "counts.json"))
    atheris.Fuzz()


def main() -> None:
    args = parse_args()
    if args.child:
        return child(args)
    work = Path(tempfile.mkdtemp(prefix="ec-fuzzcov-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    if args.bundle is None:
        from fuzz import build_bundle
        args.bundle = build_bundle(work, apps=False)
    args.artifacts.mkdir(parents=True, exist_ok=True)
    started = time.time()
    cmd = [sys.executable, __file__, "--child", str(work), "--bundle", str(args.bundle), "--seconds",
           str(args.seconds), "--rss-limit-mb", str(args.rss_limit_mb), "--timeout", str(args.timeout),
           "--artifacts", str(args.artifacts)] + (["--signed"] if args.signed else [])
    status = subprocess.call(cmd)
    counts_file = work / "counts.json"
    counts = json.loads(counts_file.read_text()) if counts_file.exists() else {}
    write_results(args, time.time() - started, counts, status)


if __name__ == "__main__":
    main()
