"""Move verified uploads into place: for each (part, sha256, destination) hash the
uploaded part file; when it matches, make it world-readable and rename it to its
destination (atomic, same filesystem), else delete it.

Runs with the board's own Python (the host sends this file's source).

    ARG = {"items": [[".incoming/123.ab.x.whl.part", "<sha256>", "blobs/<sha256>"], ...]}

Exit status 3: an upload arrived corrupted (deleted); 4: moving it failed (deleted).
"""
import hashlib
import json
import os
import sys

CORRUPT, MOVE_FAILED = 3, 4


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _discard(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def verify_move(items) -> int:
    for part, want, dst in items:
        try:
            got = sha256(part)
        except OSError as e:
            sys.stderr.write("cannot read %s: %s\n" % (part, e))
            return MOVE_FAILED
        if got != want:
            _discard(part)
            sys.stderr.write("sha256 mismatch for %s: expected %s, got %s\n" % (dst, want, got))
            return CORRUPT
        try:
            os.chmod(part, 0o644)
            os.replace(part, dst)
        except OSError as e:
            _discard(part)
            sys.stderr.write("moving %s to %s failed: %s\n" % (part, dst, e))
            return MOVE_FAILED
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return verify_move(json.loads(argv[0])["items"])


if __name__ == "__main__":
    sys.exit(main())
