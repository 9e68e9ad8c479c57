"""Opening the board to calibrate: ``local`` (this machine's board venv, optionally
seeing this host's LiteRT / ExecuTorch), a ``Board`` given as is, or a device name
or ``user@host[:port]`` reached over SSH."""
from __future__ import annotations

from pathlib import Path

from ..deploy.board import Board
from ..deploy.local import LocalBoard
from ..cache import cache_dir


def app_runtimes_board(root=None, progress=print):
    """A LocalBoard (its own venv: numpy + the runtime wheel) that also sees the app runtimes
    installed on this host (ai-edge-litert; executorch with torch) through a ``.pth`` line
    naming the host's site-packages. The path line comes after the venv's own site-packages,
    so the board's numpy and edgecompress_runtime are its own, and the host package
    ``edgecompress`` (an editable install, activated by the host's own .pth hooks, which a
    path line does not run) stays out of reach. For calibrating the app backends on this
    machine (``edgecompress calibrate --device local --app-runtimes``) and for tests."""
    import importlib.util

    board = LocalBoard(Path(root) if root else cache_dir() / "local-board-apps")
    board.install_runtime(progress=progress)
    dirs = []
    for mod in ("ai_edge_litert", "executorch", "torch"):
        spec = importlib.util.find_spec(mod)
        if spec is not None and spec.submodule_search_locations:
            d = str(Path(list(spec.submodule_search_locations)[0]).parent)
            if d not in dirs:
                dirs.append(d)
    site = next((board.venv / "lib").glob("python*/site-packages"))
    pth = site / "zz_edgecompress_host_app_runtimes.pth"
    text = "".join(d + "\n" for d in dirs)
    if not pth.exists() or pth.read_text() != text:
        pth.write_text(text)
    return board


def open_board(device: str = "local", *, board: Board | None = None, inventory=None, settings=None,
               progress=print, app_runtimes: bool = False) -> Board:
    """``board`` as given, else ``local`` / a device name or ``user@host[:port]`` (an ``SSHBoard``
    that does not sign). ``app_runtimes`` (``local`` only): the board venv also sees this host's
    LiteRT / ExecuTorch (``app_runtimes_board``)."""
    if board is not None:
        return board
    if device in (None, "", "local"):
        return app_runtimes_board(progress=progress) if app_runtimes else LocalBoard()
    from ..deploy.connection import SSHSettings
    from ..deploy.inventory import load_inventory, resolve
    from ..deploy.ssh_board import SSHBoard
    inv = load_inventory(inventory) if isinstance(inventory, (str, Path)) else inventory
    dev = resolve(device, inv)
    if inv is not None:
        settings = inv.settings(settings or SSHSettings())
    return SSHBoard(dev, settings, sign=False, progress=progress)
