"""devices.toml, user@host:port and ~/.ssh/config: parsed, validated, with clear errors.
Nothing here touches the network."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from edgecompress.deploy.connection import Connection, SSHSettings, split_spec
from edgecompress.deploy.inventory import load_inventory, resolve
from edgecompress.errors import InventoryError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("spec,want", [
    ("pi@10.0.0.7", ("pi", "10.0.0.7", None)),
    ("pi@10.0.0.7:2222", ("pi", "10.0.0.7", 2222)),
    ("10.0.0.7", (None, "10.0.0.7", None)),
    ("board-a", (None, "board-a", None)),
    ("me@[fe80::1]:22", ("me", "fe80::1", 22)),
    ("fe80::1", (None, "fe80::1", None)),
    ("a@b@host:1", ("a@b", "host", 1)),
])
def test_split_spec(spec, want):
    assert split_spec(spec) == want


@pytest.mark.parametrize("spec,msg", [
    ("", "user@host"), ("@host", "empty user"), ("pi@host:0", "1 to 65535"), ("pi@host:http", "1 to 65535"),
    ("pi@[::1", "missing ']'"), ("pi@", "missing or invalid host"),
])
def test_split_spec_errors(spec, msg):
    with pytest.raises(InventoryError, match=msg):
        split_spec(spec)


def _write(tmp_path, text) -> Path:
    p = tmp_path / "devices.toml"
    p.write_text(text)
    return p


def test_inventory_with_defaults_tags_and_ssh_settings(tmp_path):
    key = tmp_path / "id_test"
    key.write_text("not really a key")
    inv = load_inventory(_write(tmp_path, f"""
[ssh]
known_hosts = "kh"
connect_timeout = 3
[defaults]
user = "pi"
target = "raspberry-pi-4"
identity_file = "{key.name}"
[[device]]
name = "pi-1"
host = "10.0.0.11"
tags = ["lab", "rpi4"]
[[device]]
name = "pi-2"
host = "10.0.0.12"
port = 2222
user = "admin"
tags = ["rpi4"]
packages = ["ai-edge-litert"]
"""))
    a, b = inv.devices
    assert (a.user, a.port, a.target, a.identity_file) == ("pi", None, "raspberry-pi-4", str(key))
    assert (b.user, b.port, b.packages) == ("admin", 2222, ("ai-edge-litert",))
    assert b.spec == "admin@10.0.0.12:2222"
    assert [d.name for d in inv.select(tags=["lab"])] == ["pi-1"]
    assert [d.name for d in inv.select(tags=["rpi4"])] == ["pi-1", "pi-2"]
    with pytest.raises(InventoryError, match="no device has all of the tags nope"):
        inv.select(tags=["nope"])
    s = inv.settings(SSHSettings(connect_timeout=7))      # the command line wins over the file
    assert s.connect_timeout == 7 and s.known_hosts == (str(tmp_path / "kh"),)
    assert inv.settings().connect_timeout == 3
    assert resolve("pi-2", inv) is b
    with pytest.raises(InventoryError, match="did you mean 'pi-1'"):
        resolve("pi-11", inv)
    d = resolve("root@192.0.2.9:2200", inv)            # a spec not in the file gets its defaults
    assert (d.user, d.port, d.target) == ("root", 2200, "raspberry-pi-4")


@pytest.mark.parametrize("body,msg", [
    ('[[device]]\nname = "a"\nhots = "x"\n', "unknown key 'hots' \\(did you mean 'host'\\?\\)"),
    ('[[device]]\nname = "a"\n', "missing required key 'host'"),
    ('[[device]]\nname = "a b"\nhost = "x"\n', "may hold only letters"),
    ('[[device]]\nname = "a"\nhost = "x"\nport = 70000\n', "1 to 65535"),
    ('[[device]]\nname = "a"\nhost = "pi@x"\n', "put the user in 'user'"),
    ('[[device]]\nname = "a"\nhost = "x"\ntarget = "raspberry-pi-9"\n', "unknown target 'raspberry-pi-9'"),
    ('[[device]]\nname = "a"\nhost = "x"\nidentity_file = "nope"\n', "identity_file .* does not exist"),
    ('[[device]]\nname = "a"\nhost = "x"\ntags = "lab"\n', "array of non-empty strings"),
    ('[[device]]\nname = "a"\nhost = "x"\n[[device]]\nname = "a"\nhost = "y"\n', "duplicate device name 'a'"),
    ('[ssh]\nconnect_timeout = -1\n[[device]]\nname = "a"\nhost = "x"\n', "seconds > 0"),
    ('[ssh]\ntimeout = 1\n[[device]]\nname = "a"\nhost = "x"\n', "unknown key 'timeout'"),
    ('[defaults]\nuser = "pi"\n', "no devices"),
    ('[[device]\n', "not valid TOML"),
    ('[[device]]\nname = "a"\nhost = "x"\nworkdir = "../etc"\n', "without '..'"),
    ('[[device]]\nname = "a"\nhost = "x"\nworkdir = "."\n', "directory of its own"),
    ('[[device]]\nname = "a"\nhost = "x"\nworkdir = "~"\n', "directory of its own"),
])
def test_inventory_errors_say_what_is_wrong(tmp_path, body, msg):
    with pytest.raises(InventoryError, match=msg):
        load_inventory(_write(tmp_path, body))


def test_missing_inventory():
    with pytest.raises(InventoryError, match="does not exist"):
        load_inventory("/nonexistent/devices.toml")


def test_ssh_config_is_honoured_and_the_constructor_does_not_connect(tmp_path):
    key = tmp_path / "id_pi"
    key.write_text("x")
    cfg = tmp_path / "config"
    cfg.write_text(f"""
Host kitchen-pi
    HostName 192.0.2.44
    Port 2200
    User pi
    IdentityFile {key}
    UserKnownHostsFile {tmp_path / 'kh'}
""")
    c = Connection("kitchen-pi", settings=SSHSettings(ssh_config=str(cfg)))
    assert (c.host, c.port, c.user) == ("192.0.2.44", 2200, "pi")
    assert c.identity_files == (str(key),) and c.known_hosts_files == (str(tmp_path / "kh"),)
    assert not c.is_connected and c.client is None           # lazy: nothing opened yet
    # explicit values beat the config
    c2 = Connection("root@kitchen-pi:22", settings=SSHSettings(ssh_config=str(cfg)))
    assert (c2.user, c2.port) == ("root", 22)
    with pytest.raises(InventoryError, match="does not exist"):
        Connection("x", settings=SSHSettings(ssh_config=str(tmp_path / "nope")))


def test_remote_arguments_are_quoted():
    c = Connection("pi@192.0.2.1", settings=SSHSettings(ssh_config=""))
    c._has_timeout = True
    line = c.command_line(["echo", "a b", "$(reboot)", "it's", ";rm -rf /"], env={"X": "1 2"}, cwd="/tmp/d d",
                          timeout=5)
    assert line == ("cd '/tmp/d d' && env 'X=1 2' timeout -k 5 5 echo 'a b' '$(reboot)' 'it'\"'\"'s' "
                    "';rm -rf /'")
    with pytest.raises(TypeError):
        c.command_line("echo hi")
    with pytest.raises(ValueError):
        c.command_line(["true"], env={"BAD NAME": "1"})


def test_secrets_stay_out_of_reprs():
    s = SSHSettings(allow_password=True, password="hunter2")
    assert "hunter2" not in repr(s)
    c = Connection("pi@192.0.2.1", settings=s.with_(ssh_config=""))
    assert "hunter2" not in repr(c)


def test_only_connection_py_imports_paramiko():
    """One connection class is the only way to a board (design.md)."""
    offenders = []
    for p in (ROOT / "edgecompress").rglob("*.py"):
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] == "paramiko" for n in names):
                offenders.append(str(p.relative_to(ROOT)))
    assert offenders == ["edgecompress/deploy/connection.py"]
    for p in (ROOT / "runtime" / "edgecompress_runtime").rglob("*.py"):
        text = p.read_text()
        assert "import paramiko" not in text and "from cryptography" not in text, p
