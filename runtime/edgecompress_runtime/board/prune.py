"""Keep the newest ``keep`` bundles on the board (by modification time), never the
``protect`` ones; print the file names removed.

Runs with the board's own Python (the host sends this file's source).

    ARG = {"work": "/home/pi/.edgecompress", "keep": 20, "protect": ["<sha256>.ecb"]}
"""
import json
import os
import sys


def prune(a: dict) -> list:
    d = os.path.join(a["work"], "bundles")
    files = sorted((f for f in os.listdir(d) if f.endswith(".ecb")),
                   key=lambda f: os.path.getmtime(os.path.join(d, f)), reverse=True)
    gone = []
    for f in files[a["keep"]:]:
        if f not in a["protect"]:
            os.unlink(os.path.join(d, f))
            gone.append(f)
    return gone


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print(json.dumps(prune(json.loads(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
