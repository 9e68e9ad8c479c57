"""Run the device suite against any board:

    pytest device_tests --device pi@10.0.0.7 [--identity ~/.ssh/id_ed25519] [--known-hosts FILE]
    pytest device_tests --inventory devices.toml [--tags lab]

Without --device/--inventory it stands up its own OpenSSH board (tests/boards.py),
which is what `make test` (and CI) runs. The suite installs into a separate work
directory on the board (default ``.edgecompress-device-tests``) and removes it
again, so an existing edgecompress install there is left alone; it never signs
bundles, so it never changes a board's trusted keys.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from boards import (_isolated_signing_keys, _pinned_runtime_wheel, make_bundles, sshd,  # noqa: E402,F401
                    start_board)

FIXTURE_BOARD = "fixture-board"


def pytest_addoption(parser):
    g = parser.getgroup("edgecompress device tests")
    g.addoption("--device", action="append", default=[], help="board: user@host[:port] or a name from --inventory")
    g.addoption("--inventory", help="devices.toml with the boards to test")
    g.addoption("--tags", default="", help="with --inventory: only devices with all these tags (comma list)")
    g.addoption("--identity", help="SSH private key for --device")
    g.addoption("--known-hosts", help="known_hosts file (default ~/.ssh/known_hosts)")
    g.addoption("--trust-on-first-use", action="store_true", help="record unknown host keys")
    g.addoption("--workdir", default=".edgecompress-device-tests", help="work directory on the board")
    g.addoption("--bundle", action="append", default=[], help="bundle(s) to deploy (default: small ones built here)")


def _device_names(config) -> list[str]:
    if config.getoption("--inventory"):
        from edgecompress.deploy.inventory import load_inventory
        inv = load_inventory(config.getoption("--inventory"))
        names = config.getoption("--device") or [d.name for d in inv.select(
            tags=[t for t in config.getoption("--tags").split(",") if t])]
        return names
    return config.getoption("--device") or [FIXTURE_BOARD]


def pytest_generate_tests(metafunc):
    if "dut" in metafunc.fixturenames:
        metafunc.parametrize("dut", _device_names(metafunc.config), indirect=True, scope="module")


@pytest.fixture(scope="module")
def dut(request):
    """(Device, SSHSettings) of the board under test."""
    from edgecompress.deploy.connection import SSHSettings
    from edgecompress.deploy.inventory import load_inventory, resolve
    cfg = request.config
    name = request.param
    if name == FIXTURE_BOARD:
        request.getfixturevalue("sshd")
        b = start_board()
        request.addfinalizer(b.stop)
        dev = b.device("fixture-board", workdir=cfg.getoption("--workdir"))
        return dev, b.settings()
    inv = load_inventory(cfg.getoption("--inventory")) if cfg.getoption("--inventory") else None
    dev = resolve(name, inv)
    if cfg.getoption("--identity"):
        dev = dev.with_(identity_file=str(Path(cfg.getoption("--identity")).expanduser()))
    dev = dev.with_(workdir=cfg.getoption("--workdir"))
    settings = SSHSettings(trust_on_first_use=cfg.getoption("--trust-on-first-use"),
                           known_hosts=(cfg.getoption("--known-hosts"),) if cfg.getoption("--known-hosts") else None)
    if inv is not None:
        settings = inv.settings(settings)
    return dev, settings


@pytest.fixture(scope="session")
def device_bundles(request, tmp_path_factory):
    given = request.config.getoption("--bundle")
    if given:
        return [Path(b) for b in given]
    return list(make_bundles(tmp_path_factory.mktemp("device-bundles")).values())
