"""Building blocks the zoo's models share: an MLP and the check of their size arguments."""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def mlp(in_dim: int, sizes: Sequence[int], *, final_relu: bool) -> nn.Sequential:
    """Linear layers of ``sizes`` with ReLU between them (and after the last when ``final_relu``)."""
    layers: list[nn.Module] = []
    for k, size in enumerate(sizes):
        layers.append(nn.Linear(in_dim, size))
        if final_relu or k < len(sizes) - 1:
            layers.append(nn.ReLU())
        in_dim = size
    return nn.Sequential(*layers)


def positive_ints(name: str, values, *, allow_empty: bool = True) -> tuple[int, ...]:
    """``values`` as a tuple, or ValueError naming ``name`` when one is not a positive int."""
    values = tuple(values)
    if not values and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must contain positive ints, got {v!r}")
    return values


def ctr_sizes(model, vocab_sizes, dense_dim: int, embedding_dim: int, **mlps) -> dict:
    """Check the sizes of a CTR model (dense features + one sparse field per vocabulary), set
    the ``config`` and size attributes such models carry, and return the checked MLP sizes."""
    vocab_sizes = positive_ints("vocab_sizes", vocab_sizes, allow_empty=False)
    (dense_dim, embedding_dim) = positive_ints("dense_dim/embedding_dim", (dense_dim, embedding_dim))
    sizes = {name: positive_ints(name, v) for name, v in mlps.items()}
    model.config = dict(vocab_sizes=list(vocab_sizes), dense_dim=dense_dim, embedding_dim=embedding_dim,
                        **{name: list(v) for name, v in sizes.items()})
    model.vocab_sizes = vocab_sizes
    model.dense_dim = dense_dim
    model.embedding_dim = embedding_dim
    model.num_fields = len(vocab_sizes)
    return sizes
