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
from edgecompress_runtime.bundle_writer import bundle_bytes, npy_bytes, write_bundle

from ..passes import plan_to_json


def _member_name(prefix: str, name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    return f"{prefix}/{safe}.npy"


def source_model_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def program_members(program) -> tuple[dict, dict, dict]:
    """(params manifest, constants manifest, members) for a program's weights."""
    members, params, consts = {}, {}, {}
    for name, p in sorted(program.params.items()):
        roles = {}
        for role, arr in p.arrays.items():
            member = _member_name("arrays", f"{name}.{role}")
            members[member] = npy_bytes(arr)
            roles[role] = member
        params[name] = {"kind": p.kind, "shape": list(p.shape), "bits": p.bits, "members": roles,
                        "role": program.roles.get(name, "other"), **({"info": p.info} if p.info else {}),
                        **({"act": p.act} if p.act else {})}
    for name, arr in sorted(program.constants.items()):
        member = _member_name("constants", name)
        members[member] = npy_bytes(arr)
        consts[name] = member
    return params, consts, members


def reference_members(inputs: dict, outputs: np.ndarray) -> tuple[dict, dict]:
    members, names = {}, {}
    for k, v in inputs.items():
        m = _member_name("reference/inputs", k)
        members[m] = npy_bytes(np.asarray(v))
        names[k] = m
    members["reference/outputs.npy"] = npy_bytes(np.asarray(outputs, dtype=np.float32))
    return {"inputs": names, "outputs": "reference/outputs.npy"}, members


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
        "plan": plan_to_json(plan),
    }
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
        return Bundle(path="<in-memory bundle>", manifest=self.manifest, members=self.members, size=self.size())

    def size(self) -> int:
        return len(bundle_bytes(self.manifest, self.members))

    def write(self, path) -> int:
        return write_bundle(path, self.manifest, self.members)
