"""Putting bundles on boards and measuring them there.

- ``local``       this machine as a board (a separate venv); used by ``edgecompress demo``
- ``inventory``   devices.toml, ``user@host:port``, ~/.ssh/config
- ``connection``  one SSH connection (the only module that imports paramiko)
- ``install``     runtime wheel + wheelhouse, verified uploads, atomic versioned installs
- ``bench``       the benchmark on the board, board facts, repeats
- ``board``       ``SSHBoard``: a board over SSH with the LocalBoard interface
- ``farm``        many boards in parallel, pooled by target profile; reports
- ``keys``        ed25519 signing keys and signed bundles

Imports are lazy so ``import edgecompress`` does not pull in paramiko.
"""

__all__ = ["SSHBoard", "Connection", "SSHSettings", "Device", "load_inventory", "resolve", "Farm", "LocalBoard"]

_WHERE = {"SSHBoard": "board", "Connection": "connection", "SSHSettings": "connection", "Device": "inventory",
          "load_inventory": "inventory", "resolve": "inventory", "Farm": "farm", "LocalBoard": "local"}


def __getattr__(name):
    if name in _WHERE:
        import importlib
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(name)
