"""Programs the host runs on a board, one module each. Every one takes one JSON
argument (``sys.argv[1]``) and prints one JSON line, so the host never parses text.

Two kinds, by what the board has when they run:

- ``probe``, ``install``, ``verify_move``, ``trust_key``, ``prune``: run by the board's
  own Python before (or beside) any runtime install, so the host sends their source
  (``python3 -c SOURCE ARG``, see ``source``); standard library only, no imports of
  this package.
- ``facts``, ``bench_run``: run in the installed venv as
  ``python -m edgecompress_runtime.board.<name>`` (``facts`` also by source when no
  runtime is installed yet).
"""
from __future__ import annotations

from pathlib import Path

PROGRAMS = ("probe", "install", "verify_move", "trust_key", "prune", "facts", "bench_run")


def source(name: str) -> str:
    """The text of program ``name``, for ``python -c`` on a board that lacks this package."""
    if name not in PROGRAMS:
        raise ValueError(f"no board program {name!r}; one of {', '.join(PROGRAMS)}")
    return (Path(__file__).parent / f"{name}.py").read_text()
