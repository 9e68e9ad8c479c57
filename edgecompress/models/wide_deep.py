"""Wide & Deep (Cheng et al., 2016): a linear "wide" part over the raw features and a
"deep" MLP over embeddings + dense features, summed into one logit."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import ctr_sizes, mlp


class WideDeep(nn.Module):
    """CTR model. ``forward(dense float32[B, D], sparse int64[B, F]) -> logits float32[B]``.

    wide = Linear(dense) + sum_i w_i[sparse_i]   (one-hot linear model, 1-dim tables)
    deep = MLP(concat(dense, e_1..e_F))
    """

    input_names = ("dense", "sparse")
    task = "ctr"
    output = "logit"
    zoo_name = "wide_deep"

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

        self.wide_dense = nn.Linear(dense_dim, 1)
        self.wide_sparse = nn.ModuleList(nn.Embedding(n, 1) for n in vocab_sizes)
        self.embeddings = nn.ModuleList(nn.Embedding(n, embedding_dim) for n in vocab_sizes)
        self.deep = mlp(dense_dim + self.num_fields * embedding_dim, (*hidden, 1), final_relu=False)
        for table in self.wide_sparse:
            nn.init.normal_(table.weight, std=0.01)
        for table in self.embeddings:
            nn.init.normal_(table.weight, std=0.1)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        wide_terms = torch.cat([table(sparse[:, i]) for i, table in enumerate(self.wide_sparse)], dim=1)  # [B, F]
        wide = self.wide_dense(dense) + wide_terms.sum(dim=1, keepdim=True)  # [B, 1]
        embs = [table(sparse[:, i]) for i, table in enumerate(self.embeddings)]
        deep = self.deep(torch.cat([dense, *embs], dim=1))  # [B, 1]
        return (wide + deep).squeeze(-1)

    def example_inputs(self, batch_size: int = 4, *,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        dense = torch.randn(batch_size, self.dense_dim, generator=generator)
        sparse = torch.stack(
            [torch.randint(0, n, (batch_size,), generator=generator) for n in self.vocab_sizes], dim=1)
        return dense, sparse
