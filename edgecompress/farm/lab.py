"""Lab hosts as Ray nodes: ``edgecompress lab start`` runs Ray's own ``ray start`` on a
lab host, declaring the boards its inventory lists as Ray resources -- one
``board:<profile>`` per target profile (count = boards of that profile) and one
``board-name:<name>`` per board -- and registers those boards in a small named,
detached actor on the head (``LabState``), which also keeps what the farm driver
reports: quarantined boards and each board's last error. ``lab status`` reads
the pool back: nodes, boards per profile, busy/free, quarantined, last error.

Ray is an optional extra (``pip install 'edgecompress[farm]'``): it is imported only
here and in ray_pool.py, inside functions."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..errors import EdgecompressError, UnreachableError
from .on_node import INVENTORY_ENV

NAMESPACE = "edgecompress"
STATE_ACTOR = "edgecompress-lab"
HEAD_RESOURCE = "edgecompress-lab-head"     # the state actor lives on the head, not on a lab host that may die
BOARD = "board:"
BOARD_NAME = "board-name:"
DEFAULT_PORT = 6379


def import_ray():
    try:
        import ray
    except ImportError:
        raise EdgecompressError("the farm on Ray needs Ray: pip install 'edgecompress[farm]'") from None
    return ray


def board_resources(inv) -> dict[str, float]:
    """The Ray resources of the boards in an inventory."""
    res: dict[str, float] = {}
    for d in inv.devices:
        if not d.target:
            raise EdgecompressError(f"{inv.source}: board {d.name} has no target profile; a lab pools boards "
                                    "by profile (add target = \"...\")")
        res[BOARD + d.target] = res.get(BOARD + d.target, 0) + 1
        res[BOARD_NAME + d.name] = 1
    return res


def _ray_cli() -> str:
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.exists() else (shutil.which("ray") or "ray")


def connect(address: str):
    """``ray.init`` to a running lab; an unreachable head is one line naming it."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    try:
        ray.init(address=address, namespace=NAMESPACE, logging_level="ERROR", log_to_driver=False,
                 configure_logging=True)
    except (ConnectionError, RuntimeError, TimeoutError) as e:
        raise UnreachableError(f"no Ray lab head at {address} ({str(e).splitlines()[0][:120]}): start one "
                               f"with `edgecompress lab start --inventory devices.toml` on the head host") from None
    return ray


def check_head(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast (ray.init would retry for a minute) when nothing listens at the head's address."""
    import socket
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or address, int(port or DEFAULT_PORT)), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        raise UnreachableError(f"no Ray lab head at {address} ({e}): start one with "
                               f"`edgecompress lab start --inventory devices.toml` on the head host") from None


def start_node(inventory: str | None, address: str | None = None, port: int = DEFAULT_PORT, node_ip: str | None = None,
               num_cpus: int | None = None, object_store_mb: int | None = None, progress=print) -> dict:
    """Start a head (no ``address``) or join one, declaring this host's boards (a head may have
    none: ``inventory`` None); returns what it did."""
    from ..deploy.inventory import load_inventory
    inv = load_inventory(inventory) if inventory else None
    res = board_resources(inv) if inv else {}
    # a CPU per board: farm tasks ask for none, but Ray keeps about num_cpus idle workers per node warm
    boards = sum(1 for k in res if k.startswith(BOARD_NAME))
    cmd = [_ray_cli(), "start", "--disable-usage-stats",
           "--num-cpus", str(num_cpus if num_cpus is not None else max(1, boards))]
    if address:
        check_head(address)
        cmd += ["--address", address]
    else:
        res[HEAD_RESOURCE] = 1
        cmd += ["--head", "--port", str(port), "--include-dashboard=false"]
    cmd += ["--resources", json.dumps(res)]
    if node_ip:
        cmd += ["--node-ip-address", node_ip]
    if object_store_mb:
        cmd += ["--object-store-memory", str(object_store_mb * 1_000_000)]
    env = dict(os.environ, **({INVENTORY_ENV: str(Path(inventory).resolve())} if inventory else {}))
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise EdgecompressError(f"ray start failed ({' '.join(cmd[1:3])}): {' | '.join(tail)}")
    head = address or f"{node_ip or '127.0.0.1'}:{port}"
    boards = [{"name": d.name, "target": d.target, "address": d.spec, "tags": list(d.tags),
               "node": node_ip or os.uname().nodename} for d in (inv.devices if inv else ())]
    state(connect(head)).register.remote(boards)
    progress(f"lab node {'joined ' + address if address else 'head at ' + head}: "
             + (", ".join(f"{k} x{int(v)}" for k, v in sorted(res.items()) if k.startswith(BOARD)) or "no boards"))
    return {"address": head, "resources": res, "boards": boards}


class _LabState:
    """The lab's shared record: the boards registered by lab hosts, quarantined boards and
    last errors (for ``lab status``)."""

    def __init__(self):
        self.boards: dict[str, dict] = {}
        self.quarantined: dict[str, dict] = {}
        self.last_error: dict[str, dict] = {}

    def register(self, boards: list[dict]) -> None:
        for b in boards:
            self.boards[b["name"]] = b
            self.quarantined.pop(b["name"], None)

    def report(self, name: str, error: dict, quarantined: bool) -> None:
        rec = dict(error, at=time.time())
        self.last_error[name] = rec
        if quarantined:
            self.quarantined[name] = rec

    def new_run(self) -> None:
        """Quarantine lasts one farm run: a new run starts with every board trusted again."""
        self.quarantined.clear()

    def snapshot(self) -> dict:
        return {"boards": self.boards, "quarantined": self.quarantined, "last_error": self.last_error}


def state(ray):
    """The lab's state actor (created on the head by its ``lab start``)."""
    actor = ray.remote(num_cpus=0, resources={HEAD_RESOURCE: 0.001})(_LabState)
    return actor.options(name=STATE_ACTOR, namespace=NAMESPACE, lifetime="detached", get_if_exists=True).remote()


def pool(ray) -> dict:
    """The lab's boards as Ray sees them now: {name: board record + node, free} for boards
    whose node is alive, plus quarantined / last errors from the state actor."""
    snap = ray.get(state(ray).snapshot.remote(), timeout=30)
    alive = {}
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        for k in n.get("Resources", {}):
            if k.startswith(BOARD_NAME):
                alive[k[len(BOARD_NAME):]] = n.get("NodeManagerAddress")
    avail = ray.available_resources()
    boards = {}
    for name, node in alive.items():
        rec = dict(snap["boards"].get(name, {"name": name, "target": None, "address": "?", "tags": []}))
        rec.update(node=node, busy=avail.get(BOARD_NAME + name, 0) < 1,
                   quarantined=snap["quarantined"].get(name), last_error=snap["last_error"].get(name))
        boards[name] = rec
    return boards


def status(address: str) -> dict:
    check_head(address)
    ray = connect(address)
    nodes = [{"node": n.get("NodeManagerAddress"), "alive": bool(n.get("Alive")),
              "boards": sorted(k[len(BOARD_NAME):] for k in n.get("Resources", {}) if k.startswith(BOARD_NAME))}
             for n in ray.nodes()]
    total, avail = ray.cluster_resources(), ray.available_resources()
    kinds = {k[len(BOARD):]: {"boards": int(v), "free": int(avail.get(k, 0)), "busy": int(v - avail.get(k, 0))}
             for k, v in sorted(total.items()) if k.startswith(BOARD)}
    boards = pool(ray)
    snap = ray.get(state(ray).snapshot.remote(), timeout=30)
    gone = {n: dict(b, quarantined=snap["quarantined"].get(n), last_error=snap["last_error"].get(n))
            for n, b in snap["boards"].items() if n not in boards}      # registered, their node is not alive
    return {"address": address, "nodes": nodes, "profiles": kinds, "boards": boards, "gone": gone}


def format_status(st: dict) -> str:
    lines = [f"lab at {st['address']}: {sum(n['alive'] for n in st['nodes'])} node(s) alive"]
    for n in st["nodes"]:
        lines.append(f"  node {n['node']} {'alive' if n['alive'] else 'DEAD'}: "
                     + (", ".join(n["boards"]) or "no boards"))
    lines.append("profiles:")
    for k, v in st["profiles"].items():
        lines.append(f"  {k}: {v['boards']} board(s), {v['busy']} busy, {v['free']} free")
    lines.append("boards:")
    for name, b in sorted(st["boards"].items()):
        q = b.get("quarantined")
        err = b.get("last_error")
        lines.append(f"  {name} ({b.get('target')}, {b.get('address')}) on {b['node']}: "
                     + ("QUARANTINED" if q else "busy" if b["busy"] else "free")
                     + (f"; last error {err['type']}: {err['message'][:100]}" if err else ""))
    for name, b in sorted(st.get("gone", {}).items()):
        err = b.get("last_error")
        lines.append(f"  {name} ({b.get('target')}, {b.get('address')}): GONE (its node is not in the lab)"
                     + (", QUARANTINED by the last run" if b.get("quarantined") else "")
                     + (f"; last error {err['type']}: {err['message'][:100]}" if err else ""))
    return "\n".join(lines)
