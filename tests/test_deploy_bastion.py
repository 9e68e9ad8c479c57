"""Boards behind bastions (ProxyJump), against real sshd boards: a target board in a
network namespace that only the jump board's namespace can reach (tests/boards.py
``start_bastion_pair``). Deploy and bench go through the jump host from devices.toml
``proxy_jump``, ``-J`` on the command line and ``ProxyJump`` in an ssh config file; a
wrong host key or an unreachable hop is refused with an error naming the hop.
"""
from __future__ import annotations

import json
import subprocess

import pytest
from boards import free_port, netns_available, start_bastion_pair

from edgecompress.cli import main
from edgecompress.deploy.connection import Connection, SSHSettings
from edgecompress.deploy.inventory import load_inventory
from edgecompress.deploy.ssh_board import SSHBoard
from edgecompress.errors import HostKeyError, InventoryError, UnknownHostError, UnreachableError


@pytest.fixture(scope="module")
def bastion(sshd):
    if not netns_available():
        pytest.skip("a board behind a jump host needs network namespaces")
    jump, target = start_bastion_pair()
    yield jump, target
    target.stop()
    jump.stop()


def _settings(target, **kw):
    return target.settings(identity_files=(str(target.client_key),), **kw)


def _common(target, *extra):
    return ["-i", str(target.client_key), "--known-hosts", str(target.known_hosts), "--connect-timeout", "3",
            "--no-sign", *extra]


def test_the_host_cannot_reach_the_target_directly(bastion):
    jump, target = bastion
    route = subprocess.run(["ip", "route", "get", target.host], capture_output=True, text=True).stdout
    assert " dev ecb" not in route, route     # no test link leads there (only the default route, if any)
    # (no direct connection is tried: with no test link, it would leave through this machine's default route)
    with Connection(target.spec, settings=_settings(target, proxy_jump=jump.spec)) as c:
        assert c.run(["hostname", "-I"]).stdout.split() == [target.host]


def test_deploy_and_bench_through_proxy_jump_in_devices_toml(bastion, deploy_bundles, tmp_path, capsys):
    jump, target = bastion
    inv = tmp_path / "devices.toml"
    inv.write_text(f"""
[ssh]
known_hosts = "{target.known_hosts}"
ssh_config = ""
connect_timeout = 3
[[device]]
name = "behind"
host = "{target.host}"
user = "{target.user}"
identity_file = "{target.client_key}"
proxy_jump = "{jump.spec}"
""")
    assert load_inventory(inv).get("behind").proxy_jump == jump.spec
    bundle = deploy_bundles["fp32"]
    args = ["--inventory", str(inv), "--device", "behind", "--no-sign"]
    assert main(["deploy", str(bundle), *args]) == 0, capsys.readouterr().err
    assert main(["bench", str(bundle), *args, "--batch", "1", "--iters", "5", "--warmup", "1",
                 "--min-seconds", "0", "--json", str(tmp_path / "bench.json")]) == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "bench.json").read_text())
    assert res["parity"]["ok"]
    # the deploy landed on the target board itself, not on the jump host
    assert (target.workdir / "current").is_symlink() and not (jump.workdir / "current").exists()
    # closing the board's connection closes every hop
    dev = load_inventory(inv).get("behind")
    with SSHBoard(dev, load_inventory(inv).settings(), sign=False) as sb:
        sb.conn.run(["true"])
        assert sb.conn.jumps[0].is_connected
    assert not sb.conn.is_connected and not sb.conn.jumps[0].is_connected


def test_deploy_and_bench_with_dash_J(bastion, deploy_bundles, tmp_path, capsys):
    jump, target = bastion
    bundle = deploy_bundles["fp32"]
    common = ["--device", target.spec, "-J", jump.spec, "--ssh-config", "", *_common(target)]
    assert main(["deploy", str(bundle), *common]) == 0, capsys.readouterr().err
    assert main(["bench", str(bundle), *common, "--batch", "1", "--iters", "5", "--warmup", "1",
                 "--min-seconds", "0"]) == 0, capsys.readouterr().err
    assert "parity" in capsys.readouterr().out


def test_proxy_jump_in_ssh_config_with_two_hops(bastion, deploy_bundles, tmp_path, capsys):
    """ProxyJump from the ssh config file the user passes, with the hop named by its own
    alias in that file, and two hops (the jump host through itself)."""
    jump, target = bastion
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"""
Host lab-bastion
    HostName {jump.host}
    User {jump.user}
Host lab-board
    HostName {target.host}
    User {target.user}
    ProxyJump lab-bastion,{jump.spec}
""")
    settings = _settings(target, ssh_config=str(cfg))
    with Connection("lab-board", settings=settings) as c:
        assert [h.hop_name for h in c.jumps] == [f"jump host 1 of 2 ({jump.spec})", f"jump host 2 of 2 ({jump.spec})"]
        assert c.run(["hostname", "-I"]).stdout.split() == [target.host]
        hops = list(c.jumps)
    assert not any(h.is_connected for h in hops)
    assert main(["deploy", str(deploy_bundles["fp32"]), "--device", "lab-board", "--ssh-config", str(cfg),
                 *_common(target)]) == 0, capsys.readouterr().err
    # -J none: a direct connection in spite of the config (planned only: it would leave by the default route)
    assert Connection("lab-board", settings=_settings(target, ssh_config=str(cfg), proxy_jump="none")).jumps == []


def test_wrong_host_key_on_the_jump_host_is_refused_naming_the_hop(bastion, deploy_bundles, tmp_path, capsys):
    jump, target = bastion
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / "other"], check=True)
    kt, b64 = (tmp_path / "other.pub").read_text().split()[:2]
    kh = tmp_path / "known_hosts"
    kh.write_text(f"{jump.host} {kt} {b64}\n" + target.known_hosts_line())
    with pytest.raises(HostKeyError, match=r"jump host 1 of 1 \(" + jump.spec + r"\) on the way to .*"
                                           "HOST KEY CHANGED") as e:
        Connection(target.spec, settings=_settings(target, known_hosts=(str(kh),), proxy_jump=jump.spec)).open()
    assert e.value.exit_code == 14 and not isinstance(e.value, UnknownHostError)
    assert main(["deploy", str(deploy_bundles["fp32"]), "--device", target.spec, "-J", jump.spec,
                 "--ssh-config", "", "-i", str(target.client_key), "--known-hosts", str(kh), "--no-sign"]) == 14
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"jump host 1 of 1 ({jump.spec})" in err and "HOST KEY CHANGED" in err
    # the jump host's key unknown: refused too, with a hint that works through the jump host
    kh.write_text(target.known_hosts_line())
    with pytest.raises(UnknownHostError, match="jump host 1 of 1"):
        Connection(target.spec, settings=_settings(target, known_hosts=(str(kh),), proxy_jump=jump.spec)).open()
    # the target's key unknown behind a good jump host: ssh-keyscan has to run on the jump host
    kh.write_text(jump.known_hosts_line())
    with pytest.raises(UnknownHostError, match=f"ssh -p 22 {jump.user}@{jump.host} ssh-keyscan {target.host}"):
        Connection(target.spec, settings=_settings(target, known_hosts=(str(kh),), proxy_jump=jump.spec)).open()


def test_an_unreachable_jump_host_is_named(bastion, deploy_bundles, capsys):
    jump, target = bastion
    dead = f"nobody@127.0.0.1:{free_port()}"
    with pytest.raises(UnreachableError, match=r"jump host 1 of 1 \(nobody@127\.0\.0\.1:\d+\).*connection refused"):
        Connection(target.spec, settings=_settings(target, proxy_jump=dead)).open()
    # the second hop unreachable from the first: named as hop 2, and the hop that could not reach it
    second = f"{jump.user}@{jump.host}:2"
    with pytest.raises(UnreachableError, match=r"jump host 2 of 2 \(.*:2\) on the way to .*: jump host 1 of 2 "
                                               r"\(.*\) cannot reach " + jump.host + ":2") as e:
        Connection(target.spec, settings=_settings(target, proxy_jump=f"{jump.spec},{second}")).open()
    assert e.value.exit_code == 12
    assert main(["deploy", str(deploy_bundles["fp32"]), "--device", target.spec, "-J", dead, "--ssh-config", "",
                 *_common(target)]) == 12
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "jump host 1 of 1 (nobody@127.0.0.1:" in err


def test_bad_proxy_jump_values_are_refused(tmp_path):
    inv = tmp_path / "devices.toml"
    inv.write_text('[[device]]\nname = "b"\nhost = "10.0.0.2"\nproxy_jump = "me@bastion:99999"\n')
    with pytest.raises(InventoryError, match=r"\[\[device\]\] #1 \(b\).*proxy_jump.*port"):
        load_inventory(inv)
    inv.write_text('[[device]]\nname = "b"\nhost = "10.0.0.2"\nproxy_jump = ["a@b", "c@d:2222"]\n')
    assert load_inventory(inv).get("b").proxy_jump == "a@b,c@d:2222"
    with pytest.raises(InventoryError, match="empty jump host"):
        Connection("pi@10.0.0.2", settings=SSHSettings(proxy_jump="a@b,,c", ssh_config=""))
