"""The ``lab`` verb: lab hosts as nodes of a Ray cluster, so ``farm --ray`` can spread
jobs over boards that only their own lab host reaches (the work is in
``edgecompress.farm.lab``; Ray is the optional extra ``edgecompress[farm]``)."""
from __future__ import annotations

from .options import add_verb, write_json

__all__ = ["add_parsers"]


def add_parsers(sub) -> None:
    p = add_verb(sub, "lab", "run lab hosts as Ray nodes that offer their boards to `farm --ray`", """
  edgecompress lab start                                               # the head (port 6379), no boards of its own
  edgecompress lab start --inventory room2.toml --address 10.0.0.5:6379  # a lab host joins, with its boards
  edgecompress lab status --address 10.0.0.5:6379     # nodes, boards per profile, busy/free, quarantined
  edgecompress farm a.ecb b.ecb --ray 10.0.0.5:6379   # then: every board of the lab benches every bundle

Each board becomes the Ray resources board:<profile> (one per board of that profile) and
board-name:<name>; `ray stop` on a host takes it out of the lab (Ray's own command).""")
    p.add_argument("action", choices=["start", "status"], help="start (or join) a node; status of the lab")
    p.add_argument("--inventory", help="with start: devices.toml of the boards this host reaches (each with a "
                                       "target profile; a head may have none)")
    p.add_argument("--address", help="HOST:PORT of the lab's head (start: join it; none starts a head)")
    p.add_argument("--port", type=int, default=6379, help="with start of a head: its port (default 6379)")
    p.add_argument("--node-ip", help="with start: this host's address the other nodes reach (default: Ray's guess)")
    p.add_argument("--num-cpus", type=int, help="with start: CPUs this node offers to Ray (default: one per board, "
                                                "so a warm Ray worker per board; farm jobs use none, the boards "
                                                "do the work)")
    p.add_argument("--object-store-mb", type=int, help="with start: Ray's object store size on this node")
    p.add_argument("--json", help="write what was started, or the status, to this JSON file")
    p.set_defaults(fn=lab_cmd)


def lab_cmd(args) -> int:
    from ..errors import InventoryError
    from ..farm import lab
    if args.action == "start":
        if not args.inventory and args.address:
            raise InventoryError("lab start --address (joining a lab) needs --inventory devices.toml: the boards "
                                 "this host reaches")
        lab.import_ray()
        out = lab.start_node(args.inventory, address=args.address, port=args.port, node_ip=args.node_ip,
                             num_cpus=args.num_cpus, object_store_mb=args.object_store_mb)
        print(f"farm on this lab: edgecompress farm BUNDLE... --ray {out['address']}")
    else:
        if not args.address:
            raise InventoryError("lab status needs --address HOST:PORT of the lab's head")
        lab.import_ray()
        out = lab.status(args.address)
        print(lab.format_status(out))
    if args.json:
        write_json(args.json, out)
    return 0
