"""Keep the newest ``keep`` bundles on the board (by modification time), never the
``protect`` ones nor one a running process names (a benchmark of another deploy);
print the file names removed. Safe to run by two deploys at once.

Runs with the board's own Python (the host sends this file's source).

    ARG = {"work": "/home/pi/.edgecompress", "keep": 20, "protect": ["<sha256>.ecb"]}
"""
import json
import os
import sys


def in_use(names: list, d: str) -> set:
    """The bundles of ``names`` (in directory ``d``) a running process's command line names."""
    used = set()
    if not names or not os.path.isdir("/proc/self"):
        return used
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    cmd = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            used |= {n for n in names if os.path.join(d, n) in cmd}
    return used


def prune(a: dict) -> list:
    d = os.path.join(a["work"], "bundles")
    mtimes = {}
    for f in os.listdir(d):
        if f.endswith(".ecb"):
            try:
                mtimes[f] = os.path.getmtime(os.path.join(d, f))
            except OSError:      # another deploy's prune removed it just now
                pass
    files = sorted(mtimes, key=mtimes.get, reverse=True)
    old = [f for f in files[a["keep"]:] if f not in a["protect"]]
    busy = in_use(old, d)
    gone = []
    for f in old:
        if f not in busy:
            try:
                os.unlink(os.path.join(d, f))
            except FileNotFoundError:
                continue
            gone.append(f)
    return gone


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print(json.dumps(prune(json.loads(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
