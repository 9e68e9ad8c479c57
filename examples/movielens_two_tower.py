"""MovieLens-100k, end to end: train a two-tower retrieval model, compile it
into a bundle, then recommend movies for a user from the bundle alone.

    python examples/movielens_two_tower.py [--user 42] [--epochs 3] [--out out/ml100k-two-tower.ecb]

The data is read from RecBole 1.2.1's wheel (fetched with pip into
~/.cache/edgecompress); pass --data PATH to use your own u.data or .inter file.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

import edgecompress as ec
import edgecompress_runtime as ecr
from edgecompress.data import movielens_retrieval
from edgecompress.models.zoo import model_for_data
from edgecompress.train import train


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="path to u.data or a .inter file (default: MovieLens-100k from RecBole's wheel)")
    ap.add_argument("--user", type=int, default=42, help="dense user index to recommend for")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--target", default="raspberry-pi-4")
    ap.add_argument("--out", default="out/ml100k-two-tower.ecb")
    args = ap.parse_args(argv)

    data = movielens_retrieval(args.data)
    print(f"MovieLens-100k: {data.num_users} users, {data.num_items} items, "
          f"{len(data.train):,} training interactions")
    torch.manual_seed(0)
    model = model_for_data("two_tower", data.train, embedding_dim=32)
    train(model, data.train, epochs=args.epochs, batch_size=512, lr=3e-3, negatives=4)

    result = ec.compile(model, target=args.target, data=data, output=args.out)
    print(f"bundle {result.path}: {result.size_bytes:,} bytes")
    print(f"recall@10 before {result.metrics_before['recall@10']:.4f}  "
          f"after {result.metrics_after['recall@10']:.4f} (held-out last movie per user)")

    # On the device: only numpy and edgecompress-runtime are needed from here on.
    model_rt = ecr.load(args.out)
    items = np.arange(data.num_items)
    seen = data.train_items_by_user[args.user]
    top, scores = model_rt.topk({"user_id": np.array([args.user])}, {"item_id": items}, k=args.k, exclude=seen)
    raw_items = data.meta.get("item_ids")
    print(f"top-{args.k} for user {args.user} (excluding {len(seen)} movies already rated):")
    for rank, (i, s) in enumerate(zip(top, scores), 1):
        label = raw_items[i] if raw_items is not None else i
        print(f"  {rank:>2}. item {label}  score {s:+.3f}")
    return {"top": top.tolist(), "scores": scores.tolist(), "seen": seen.tolist(),
            "metrics_after": result.metrics_after, "metrics_before": result.metrics_before}


if __name__ == "__main__":
    main()
