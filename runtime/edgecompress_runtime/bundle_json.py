"""Reading the JSON of a bundle (manifest.json, manifest.sig) with bounded nesting, so hostile input
cannot recurse the parser or the checks that walk it; errors are one short line."""
from __future__ import annotations

import json

from .errors import BundleError

MAX_JSON_DEPTH = 64               # nesting of manifest.json / manifest.sig


def clip(text, n: int = 120) -> str:
    """One line, at most about ``n`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def json_depth(obj) -> int:
    """Nesting depth of parsed JSON (iterative: no recursion on hostile input)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict):
            o = list(o.values())
        if isinstance(o, list):
            deepest = max(deepest, d)
            stack.extend((c, d + 1) for c in o if isinstance(c, (dict, list)))
    return deepest


def load_json(data: bytes, what: str, path: str):
    """Parse JSON from a bundle: bad JSON or nesting deeper than MAX_JSON_DEPTH is a BundleError."""
    try:
        obj = json.loads(data)
    except RecursionError:
        raise BundleError(f"{path}: {what} is nested too deeply (limit {MAX_JSON_DEPTH} levels)") from None
    except ValueError as e:
        raise BundleError(f"{path}: {what} is not valid JSON ({clip(e)})") from None
    depth = json_depth(obj)
    if depth > MAX_JSON_DEPTH:
        raise BundleError(f"{path}: {what} is nested {depth} levels deep (limit {MAX_JSON_DEPTH})")
    return obj
