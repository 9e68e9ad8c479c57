"""Putting bundles on boards and measuring them there.

- ``board``       ``Board``: the one interface (install, deploy, bench, facts, calibrate) and
                  the benchmark code every board shares
- ``local``       ``LocalBoard``: this machine as a board (a separate venv); used by ``edgecompress demo``
- ``ssh_board``   ``SSHBoard``: a board over SSH, with signing and per-session caches
- ``inventory``   devices.toml, ``user@host:port``, ~/.ssh/config
- ``connection``  one SSH connection (the only module that imports paramiko)
- ``wheels``      the runtime wheel and the wheelhouse a board installs
- ``install``     verified uploads, atomic versioned installs (board side: edgecompress_runtime/board/)
- ``bench``       reading a run's output, parity, agreement between repeats
- ``keys``        ed25519 signing keys and signed bundles

Many boards at once: ``edgecompress.farm``. Imports are lazy so ``import edgecompress``
does not pull in paramiko.
"""

__all__ = ["Board", "SSHBoard", "Connection", "SSHSettings", "Device", "load_inventory", "resolve", "LocalBoard"]

_WHERE = {"Board": "board", "SSHBoard": "ssh_board", "Connection": "connection", "SSHSettings": "connection",
          "Device": "inventory", "load_inventory": "inventory", "resolve": "inventory", "LocalBoard": "local"}


def __getattr__(name):
    if name in _WHERE:
        import importlib
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(name)
