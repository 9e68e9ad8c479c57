"""DeepFM (Guo et al., 2017): first-order (linear) term + factorization-machine
second-order term + deep MLP, all sharing the per-field embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import ctr_sizes, mlp


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
        hidden = ctr_sizes(self, vocab_sizes, dense_dim, embedding_dim, hidden=hidden)["hidden"]
        vocab_sizes, dense_dim, embedding_dim = self.vocab_sizes, self.dense_dim, self.embedding_dim

        self.embeddings = nn.ModuleList(nn.Embedding(n, embedding_dim) for n in vocab_sizes)
        self.first_order = nn.ModuleList(nn.Embedding(n, 1) for n in vocab_sizes)
        self.dense_linear = nn.Linear(dense_dim, 1)  # its bias is the global bias
        self.deep = mlp(self.num_fields * embedding_dim + dense_dim, (*hidden, 1), final_relu=False)
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
