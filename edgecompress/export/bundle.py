"""The host side of the bundle: turn a Program (+ spec, reference I/O, metrics,
provenance) into manifest + members. Format constants and the zip writer live
in edgecompress_runtime.bundle: one format, one loader."""
from __future__ import annotations

import hashlib
import os
import platform
import time

import numpy as np
import torch

import edgecompress_runtime
from edgecompress_runtime.bundle import Bundle
from edgecompress_runtime.bundle_writer import bundle_size, in_memory, write_bundle


def source_model_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


INFO_DIGITS = 4                  # significant digits of the passes' measured figures in a bundle
INFO_RESTATED = ("bits", "clip_search", "dim", "full_dim", "keep_ratio", "kept_rows")


def bundle_info(info: dict | None) -> dict:
    """What the passes did, as a bundle carries it: without what the plan and the param's own fields
    already say (INFO_RESTATED) and with floats to INFO_DIGITS digits (the host's Program keeps all)."""
    def short(v):
        if isinstance(v, float):
            return float(f"{v:.{INFO_DIGITS}g}")
        if isinstance(v, (list, tuple)):
            return [short(x) for x in v]
        if isinstance(v, dict):
            return {k: short(x) for k, x in v.items()}
        return v
    return {k: short(v) for k, v in (info or {}).items() if k not in INFO_RESTATED}


def program_members(program) -> tuple[dict, dict, dict]:
    """(params manifest, constants manifest, members) for a program's weights; the members are
    arrays under the names a reader sees (bundle_layout.expand), the writer packs them."""
    members, params, consts = {}, {}, {}
    for name, p in sorted(program.params.items()):
        roles = {}
        for role, arr in p.arrays.items():
            member = f"arrays/{name}.{role}"
            members[member] = np.ascontiguousarray(arr)
            roles[role] = member
        info = bundle_info(p.info)
        params[name] = {"kind": p.kind, "shape": list(p.shape), "bits": p.bits, "members": roles,
                        "role": program.roles.get(name, "other"), **({"info": info} if info else {}),
                        **({"act": p.act} if p.act else {})}
    for name, arr in sorted(program.constants.items()):
        member = f"constants/{name}"
        members[member] = np.ascontiguousarray(arr)
        consts[name] = member
    return params, consts, members


def reference_members(inputs: dict, outputs: np.ndarray) -> tuple[dict, dict]:
    members, names = {}, {}
    for k, v in inputs.items():
        m = f"reference/inputs/{k}"
        members[m] = np.ascontiguousarray(v)
        names[k] = m
    members["reference/outputs"] = np.asarray(outputs, dtype=np.float32).reshape(-1)
    return {"inputs": names, "outputs": "reference/outputs"}, members


def provenance(model, plan, reproducible: bool = False) -> dict:
    """Where a bundle came from. ``reproducible``: no wall-clock time (the same inputs give the same bytes);
    SOURCE_DATE_EPOCH, when set, is the time recorded either way."""
    when = os.environ.get("SOURCE_DATE_EPOCH")
    out = {
        "edgecompress": _version(),
        "edgecompress_runtime": edgecompress_runtime.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "host": f"{platform.system()} {platform.machine()}",
        "source_model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "source_model_sha256": source_model_hash(model),
    }                   # the plan is manifest["plan"] (once)
    if when is not None and when.isdigit():
        out["created_unix"] = int(when)
    elif not reproducible:
        out["created_unix"] = int(time.time())
    return out


def _version() -> str:
    from .. import __version__
    return __version__


class BundleDraft:
    """A bundle assembled in memory: executable by the runtime before it is
    written, so host metrics come from the exact bytes that ship."""

    def __init__(self, manifest: dict, members: dict[str, bytes]):
        self.manifest = manifest
        self.members = members

    def as_runtime_bundle(self) -> Bundle:
        """The bundle as the runtime will read it (packed and expanded: merged arrays, trimmed rows)."""
        return in_memory(self.manifest, self.members)

    def size(self) -> int:
        return bundle_size(self.manifest, self.members)

    def write(self, path) -> int:
        return write_bundle(path, self.manifest, self.members)
