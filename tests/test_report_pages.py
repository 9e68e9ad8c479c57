"""The report pages in headless Chromium, each drawn from real data: a compile under a tight
memory budget (and one no plan fits), a recorded calibration run, and a farm of two local
boards. Each page loads without console errors, is not blank, carries its labels, keeps
every SVG label inside its picture, and links nothing. Screenshots: tests/artifacts/."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import edgecompress as ec
from edgecompress.deploy.inventory import Device
from edgecompress.deploy.local import LocalBoard
from edgecompress.farm import Farm
from edgecompress.errors import BudgetError
from edgecompress.report import calibration_page, farm_page

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
RED, BLUE = (0xd6, 0x27, 0x28), (0x1f, 0x77, 0xb4)

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None,
                                reason="chromium not installed (make test installs it)")

# Run inside a copy of the page (the page itself has no scripts): every <text> of every
# <svg> must lie inside that svg's box, as the browser lays it out with its own fonts.
PROBE = """<script>
const out = [];
let texts = 0;
document.querySelectorAll('svg').forEach((svg, i) => {
  const box = svg.getBoundingClientRect();
  svg.querySelectorAll('text').forEach(t => {
    texts += 1;
    const r = t.getBoundingClientRect();
    if (r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.top < box.top - 0.5 ||
        r.bottom > box.bottom + 0.5) out.push([i, t.textContent, r.left - box.left, box.right - r.right,
                                               r.top - box.top, box.bottom - r.bottom]);
  });
});
const pre = document.createElement('pre');
pre.id = 'probe';
pre.textContent = JSON.stringify({texts: texts, outside: out});
document.body.appendChild(pre);
</script>"""


def _flags(tmp_path) -> list[str]:
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'chrome'}", "--enable-logging=stderr", "--v=0"]


def _check_page(page_html: str, name: str, tmp_path, labels: list[str]) -> tuple[set, dict]:
    """Load the page in Chromium; return the colours of its screenshot and the probe result."""
    assert "<script" not in page_html and not re.search(r"(src|href)=", page_html)   # self-contained
    page = tmp_path / f"{name}.html"
    page.write_text(page_html)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    shot.unlink(missing_ok=True)
    r = subprocess.run(["chromium", *_flags(tmp_path), "--window-size=1280,2000", f"--screenshot={shot}",
                        page.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000, r.stderr[-2000:]
    console = [line for line in r.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    from PIL import Image                     # matplotlib's own dependency
    colors = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 22)
    assert len(colors) > 50                    # not a blank page of one colour
    probed = tmp_path / f"{name}-probe.html"
    probed.write_text(page_html.replace("</body>", PROBE + "</body>"))
    dom = subprocess.run(["chromium", *_flags(tmp_path), "--dump-dom", probed.as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    for label in labels:
        assert label in dom, label
    probe = json.loads(html.unescape(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1)))
    assert probe["texts"] > 10 and probe["outside"] == [], probe["outside"]
    return {c for _, c in colors}, probe


def _has(colors: set, rgb: tuple) -> bool:
    return any(all(abs(a - b) < 8 for a, b in zip(c, rgb)) for c in colors)


def test_compile_page(trained_dlrm, ctr_data, tmp_path):
    _, test_ds = ctr_data
    res = ec.compile(trained_dlrm, target="raspberry-pi-4", data=test_ds, output=tmp_path / "r.ecb",
                     memory_budget="400KB", report=tmp_path / "rep", progress=False)
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    page = (tmp_path / "rep" / "report.html").read_text()
    zero = sum(v == 0 for d in rep["search"]["sensitivity"].values() for v in d.values() if abs(v) < 1)
    colors, _ = _check_page(page, "compile", tmp_path, [
        "chosen", "fp32", "memory budget 400 KB", "Pareto front", "bundle size (KB)", "Who pays",
        f"{zero} changed nothing measurable", "embedding_rowwise_quant", res.target])
    assert _has(colors, RED) and _has(colors, BLUE)                # the chosen plan, the front and bars
    assert page.count("<svg") == 3 and "<pre" not in page          # the plan is a table, not JSON
    # one hover title per plan searched (plus fp32 and chosen marked again)
    assert page.count("<title>") - 1 == len(rep["search"]["candidates"]) + 2


def test_page_when_no_plan_fits(trained_dlrm, ctr_data, tmp_path):
    _, test_ds = ctr_data
    with pytest.raises(BudgetError):
        ec.compile(trained_dlrm, target="raspberry-pi-4", data=test_ds, output=tmp_path / "m.ecb",
                   memory_budget=20_000, report=tmp_path / "rep", progress=False)
    page = (tmp_path / "rep" / "report.html").read_text()
    colors, _ = _check_page(page, "compile-no-plan-fits", tmp_path, [
        "no plan fits", "memory budget 20 KB", "smallest plan", "largest shipped payload", "(over)"])
    assert _has(colors, RED)


def test_calibration_page(tmp_path):
    """A recorded run (benchmarks/calibration.py on this machine, app backends included)."""
    recorded = json.loads((ROOT / "benchmarks" / "results" / "calibration_backends.json").read_text())
    trial = recorded["boards"]["x86-apps"]["trials"][0]
    v = trial["validation"]
    page = calibration_page.render_html({"table": trial["table"], "validation": v})
    colors, _ = _check_page(page, "calibration", tmp_path, [
        "estimate = measured", "within ±10 %", "measured p50 (ms, log scale)", "Graph fit", "litert (after)",
        "Every measurement"])
    assert page.count("<circle") == 2 * len(v["rows"])              # each measurement before and after
    assert _has(colors, RED) and "EMULATED" not in page


def test_farm_page(bundles, tmp_path):
    """Two boards on this machine (the local board's venv, run one at a time) bench two bundles."""
    devices = [Device("board-a", "local", target="local"), Device("board-b", "local", target="local")]
    farm = Farm(devices, [bundles["fp32"].path, bundles["int8"].path], parallel=1, out_dir=tmp_path / "farm",
                bench_kwargs={"batches": [1, 64], "warmup": 2, "iters": 20, "repeat": 2}, progress=None,
                board_factory=lambda d: LocalBoard())
    report = farm.run()
    assert report["summary"]["ok"] == 4
    page = (tmp_path / "farm" / "farm.html").read_text()
    assert page == farm_page.render_html(report)
    _check_page(page, "farm", tmp_path, [
        "board-a / fp32.ecb", "board-b / int8.ecb", "batch 64: latency per device and bundle",
        "bundle size vs p90", "p50 of each repeat", "4/4 jobs ok"])
    assert page.count("<svg") == 3
