"""DeepFM (Guo et al., 2017): first-order (linear) term + factorization-machine
second-order term + deep MLP, all sharing the per-field embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _mlp(in_dim: int, sizes: Sequence[int], *, final_relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k, size in enumerate(sizes):
        layers.append(nn.Linear(in_dim, size))
        if final_relu or k < len(sizes) - 1:
            layers.append(nn.ReLU())
        in_dim = size
    return nn.Sequential(*layers)


def _positive_ints(name: str, values, *, allow_empty: bool = True) -> tuple[int, ...]:
    values = tuple(values)
    if not values and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must contain positive ints, got {v!r}")
    return values


class DeepFM(nn.Module):
    """CTR model. ``forward(dense float32[B, D], sparse int64[B, F]) -> logits float32[B]``.

    logit = Linear(dense) + sum_i w_i[sparse_i]                       (first order)
          + 0.5 * sum_k ((sum_i e_ik)^2 - sum_i e_ik^2)                (FM second order)
          + MLP(concat(e_1..e_F, dense))                               (deep)
    """

    input_names = ("dense", "sparse")
    task = "ctr"
    output = "logit"
    zoo_name = "deepfm"

    def __init__(
        self,
        vocab_sizes: Sequence[int],
        dense_dim: int,
        embedding_dim: int = 16,
        hidden: Sequence[int] = (64, 32),
    ):
        super().__init__()
        vocab_sizes = _positive_ints("vocab_sizes", vocab_sizes, allow_empty=False)
        (dense_dim, embedding_dim) = _positive_ints("dense_dim/embedding_dim", (dense_dim, embedding_dim))
        hidden = _positive_ints("hidden", hidden)
        self.config = dict(vocab_sizes=list(vocab_sizes), dense_dim=dense_dim,
                           embedding_dim=embedding_dim, hidden=list(hidden))
        self.vocab_sizes = vocab_sizes
        self.dense_dim = dense_dim
        self.embedding_dim = embedding_dim
        self.num_fields = len(vocab_sizes)

        self.embeddings = nn.ModuleList(nn.Embedding(n, embedding_dim) for n in vocab_sizes)
        self.first_order = nn.ModuleList(nn.Embedding(n, 1) for n in vocab_sizes)
        self.dense_linear = nn.Linear(dense_dim, 1)  # its bias is the global bias
        self.deep = _mlp(self.num_fields * embedding_dim + dense_dim, (*hidden, 1), final_relu=False)
        for table in self.first_order:
            nn.init.normal_(table.weight, std=0.01)
        for table in self.embeddings:
            nn.init.normal_(table.weight, std=0.1)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        embs = [table(sparse[:, i]) for i, table in enumerate(self.embeddings)]  # F x [B, d]
        weights = [table(sparse[:, i]) for i, table in enumerate(self.first_order)]  # F x [B, 1]

        first = self.dense_linear(dense) + torch.cat(weights, dim=1).sum(dim=1, keepdim=True)  # [B, 1]

        e = torch.stack(embs, dim=1)  # [B, F, d]
        s = e.sum(dim=1)  # [B, d]
        fm = 0.5 * (s * s - (e * e).sum(dim=1)).sum(dim=1, keepdim=True)  # [B, 1]

        deep = self.deep(torch.cat([*embs, dense], dim=1))  # [B, 1]
        return (first + fm + deep).squeeze(-1)

    def example_inputs(self, batch_size: int = 4, *,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        dense = torch.randn(batch_size, self.dense_dim, generator=generator)
        sparse = torch.stack(
            [torch.randint(0, n, (batch_size,), generator=generator) for n in self.vocab_sizes], dim=1)
        return dense, sparse
