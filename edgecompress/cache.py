"""Where the host keeps what it builds once and reuses (runtime wheels, wheelhouses, signed bundles, the local
board's venv, toolchain logs): ``$EDGECOMPRESS_CACHE``, else ``~/.cache/edgecompress``."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("EDGECOMPRESS_CACHE", Path.home() / ".cache" / "edgecompress"))
