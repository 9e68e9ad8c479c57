"""Target and board must agree. A bundle is compiled for a device profile (its manifest's
``target``: name and architecture): its plan, budgets and latency estimate describe that
device. On a board of another architecture the numbers it gives describe neither, so
deploy / bench / demo refuse it (``AgreementError``, exit code 24) unless ``force``.

- architecture differs (the board's ``uname -m`` from its facts): refused; forced, it runs
  and the predictions are not compared;
- only the profile name differs (same architecture), or the board declares no profile:
  a warning, and predicted-vs-measured is not compared (the estimate is another device's);
- the profile's Python differs from the board's: a warning (a numpy bundle runs on any
  Python the runtime installs on; app backends need wheels for the board's Python).

Predictions are compared only when the board declares the bundle's own target profile.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import AgreementError

__all__ = ["bundle_target", "check_target", "gate_prediction", "normalize_arch", "profile_target"]

_ALIASES = {"arm64": "aarch64", "aarch64_be": "aarch64", "amd64": "x86_64", "x64": "x86_64",
            "armv8l": "armv7l", "armv7": "armv7l", "armhf": "armv7l"}


def normalize_arch(machine: str | None) -> str | None:
    if not machine:
        return None
    m = str(machine).strip().lower()
    return _ALIASES.get(m, m)


def bundle_target(bundle) -> dict:
    """``{"name", "arch", "python"}`` of the target a bundle was compiled for (the manifest's,
    the profile's where the manifest is silent and the profile is known here)."""
    from edgecompress_runtime.bundle import read_bundle
    t = dict(read_bundle(bundle).manifest.get("target") or {})
    out = {"name": t.get("name"), "arch": normalize_arch(t.get("arch")), "python": t.get("python")}
    if out["name"] and (out["arch"] is None or out["python"] is None):
        try:
            from ..targets import load_target
            prof = load_target(out["name"])
            out["arch"] = out["arch"] or normalize_arch(prof.arch)
            out["python"] = out["python"] or prof.python
        except Exception:  # noqa: BLE001 - a profile unknown on this host: the manifest is all we know
            pass
    return out


def profile_target(name: str) -> dict:
    """``{"name", "arch", "python"}`` of a profile, before anything is compiled for it."""
    from ..targets import load_target
    prof = load_target(name)
    return {"name": prof.name, "arch": normalize_arch(prof.arch), "python": prof.python}


def check_target(bundle, board, force: bool = False, facts: dict | None = None, target: dict | None = None) -> dict:
    """Whether ``board`` can be the device ``bundle`` was compiled for (or, with ``target``
    from ``profile_target``, the device a bundle is about to be compiled for). Raises
    ``AgreementError`` when the architectures differ and not ``force``; returns what was
    compared, ``warnings`` and ``compare_predictions`` (with ``prediction_note`` when not)."""
    tgt = target or bundle_target(bundle)
    facts = facts if facts is not None else board.facts()
    b_arch = normalize_arch(facts.get("machine"))
    b_target = getattr(board, "target", None)
    name = Path(str(bundle)).name if bundle is not None else f"a bundle for {tgt['name']}"
    label = getattr(board, "label", getattr(board, "name", "board"))
    out = {"bundle_target": tgt["name"], "bundle_arch": tgt["arch"], "bundle_python": tgt["python"],
           "board_target": b_target, "board_arch": b_arch, "board_python": facts.get("python"),
           "forced": False, "warnings": [], "compare_predictions": True, "prediction_note": None}
    if tgt["arch"] and b_arch and tgt["arch"] != b_arch:
        msg = (f"{name} was compiled for target {tgt['name']} ({tgt['arch']}) but board {label} is {b_arch}: "
               f"its plan, budgets and latency estimate describe another device")
        if not force:
            fix = f"--target {b_target}" if b_target else f"a target of architecture {b_arch}"
            raise AgreementError(f"{msg}. Compile it with {fix}, or pass --force to run it anyway")
        out["forced"] = True
        out["warnings"].append(f"--force: {msg}")
        out["compare_predictions"] = False
        out["prediction_note"] = f"the estimate is for {tgt['name']} ({tgt['arch']}), the board is {b_arch}"
    elif not b_arch:
        out["warnings"].append(f"could not read board {label}'s architecture ({facts.get('error', 'no facts')}); "
                               f"{name} was compiled for {tgt['name']} ({tgt['arch']})")
    if out["compare_predictions"] and tgt["name"] != b_target:
        out["compare_predictions"] = False
        if b_target:
            out["warnings"].append(f"{name} was compiled for profile {tgt['name']}, board {label} is declared "
                                   f"{b_target} (same architecture): its latency estimate is not compared")
            out["prediction_note"] = f"the estimate is for profile {tgt['name']}, the board is declared {b_target}"
        else:
            out["prediction_note"] = (f"the estimate is for profile {tgt['name']} and board {label} declares no "
                                      "target profile (set target = ... in devices.toml)")
    bp, tp = facts.get("python"), tgt["python"]
    if bp and tp and tp != "auto" and ".".join(str(bp).split(".")[:2]) != str(tp):
        out["warnings"].append(f"profile {tgt['name']} is for Python {tp}, board {label} runs {bp}: app "
                               "backends need wheels for the board's Python")
    return out


def gate_prediction(result: dict, check: dict) -> None:
    """Withdraw predicted-vs-measured from a bench result when the estimate is not the board's own."""
    p = result.get("prediction")
    if not p or check.get("compare_predictions", True):
        return
    p["applies"] = False
    p["withheld"] = check.get("prediction_note") or "the estimate is not for this board"
    for r in result.get("latency", []):
        r.pop("predicted_ms", None)
        r.pop("prediction_error", None)
