"""Add a public key to the runtime's trust store: the uploaded part file is renamed
into the (private) key directory, so the store never holds half a key.

Runs with the board's own Python (the host sends this file's source).

    ARG = {"dir": "/home/pi/.config/edgecompress-runtime/trusted_keys", "name": "<id>.pub", "part": "..."}
"""
import json
import os
import sys


def trust_key(a: dict) -> None:
    os.makedirs(a["dir"], exist_ok=True)
    os.chmod(a["dir"], 0o700)
    os.replace(a["part"], os.path.join(a["dir"], a["name"]))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    trust_key(json.loads(argv[0]))
    print(json.dumps({"ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
