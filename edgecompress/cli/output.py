"""What the verbs print: rich tables and status lines on the terminal, and the
toolchain's own chatter (TensorFlow/absl logs, torchao library-load failures,
FutureWarnings) kept out of the way in a log file unless --verbose."""
from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from pathlib import Path

from rich.console import Console

from ..cache import cache_dir

KEEP_LOGS = 50

__all__ = ["console", "table", "render", "print_table", "status", "toolchain_log", "say_log", "log_dir"]


def console(stream=None):
    """A rich Console on ``stream`` (default: the current sys.stdout, pytest's capsys and pipes
    included). Off a terminal, rows are not wrapped at 80 columns."""
    stream = sys.stdout if stream is None else stream
    tty = hasattr(stream, "isatty") and stream.isatty()
    width = None if tty else 200         # off a terminal (pipes, files, CI logs): whole rows
    return _Console(file=stream, width=width, markup=False, highlight=False, emoji=False, soft_wrap=not tty)


class _Console(Console):
    def on_broken_pipe(self) -> None:   # rich would exit 1 itself; main() exits 141 for every verb
        raise BrokenPipeError


def table(columns, rows, title: str | None = None, right: tuple = ()):
    """A rich Table: ``columns`` names, ``rows`` lists of strings; columns named in ``right`` align right."""
    from rich import box
    from rich.table import Table
    t = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, title_justify="left", pad_edge=False)
    for c in columns:
        t.add_column(c, justify="right" if c in right else "left", overflow="fold")
    for r in rows:
        t.add_row(*[str(x) for x in r])
    return t


def render(renderable) -> str:
    """A table (or any rich renderable) as plain text, for functions that return strings."""
    buf = io.StringIO()
    _Console(file=buf, width=200, markup=False, highlight=False, emoji=False, soft_wrap=True).print(renderable)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines())


def print_table(columns, rows, title: str | None = None, right: tuple = ()) -> None:
    console().print(table(columns, rows, title=title, right=right))


@contextlib.contextmanager
def status(message: str, stream=None, enabled: bool = True):
    """A spinner with ``message`` on ``stream`` (default stderr) while the block runs (terminals
    only; nothing elsewhere)."""
    err = console(stream if stream is not None else sys.stderr)
    if not enabled or not err.is_terminal:
        yield
        return
    with err.status(message):
        yield


def log_dir() -> Path:
    return cache_dir() / "logs"


@contextlib.contextmanager
def toolchain_log(verb: str, verbose: bool = False):
    """Send everything written to stderr while the block runs -- by C++ libraries to file
    descriptor 2 and by Python (warnings, logging handlers) to sys.stderr -- into
    ``log_dir()/<verb>-<time>.log``. Yields a holder whose ``.path`` is the log when something
    was written (None when nothing was, or with ``verbose``: then nothing is redirected).
    Python code meant for the user writes to ``holder.terminal`` (the real stderr)."""
    holder = _Captured()
    if verbose or not _has_fd(sys.stderr):
        holder.terminal = sys.stderr
        yield holder
        return
    path = log_dir() / f"{verb}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    _prune(path.parent)
    sys.stderr.flush()
    saved = os.dup(2)
    log = open(path, "w")
    holder.terminal = os.fdopen(os.dup(saved), "w", buffering=1)
    os.dup2(log.fileno(), 2)
    failed = False
    try:
        yield holder
    except BaseException:
        failed = True
        raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        log.close()
        holder.terminal.close()
        holder.terminal = sys.stderr
        if path.stat().st_size:
            holder.path = path
        else:
            path.unlink()
        if failed:          # the error follows on stderr; say where the toolchain's side of it is
            say_log(holder)


def say_log(captured) -> None:
    """Tell where the toolchain's messages went, if it wrote any."""
    if captured.path is not None:
        print(f"edgecompress: toolchain messages (TensorFlow, torchao, warnings) are in {captured.path}; "
              "--verbose shows them here", file=sys.stderr)


def _prune(folder: Path, keep: int = KEEP_LOGS) -> None:
    """Logs are for the last runs only: drop all but the newest ``keep``."""
    try:
        logs = sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime)
        for old in logs[:-keep] if len(logs) > keep else []:
            old.unlink(missing_ok=True)
    except OSError:    # another run pruning at the same time
        pass


class _Captured:
    path: Path | None = None
    terminal = None


def _has_fd(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):   # pytest's capsys, StringIO
        return False
