"""DLRM (Naumov et al., 2019): bottom MLP on dense features, one embedding bag per
sparse field, pairwise dot-product interaction, top MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import mlp, positive_ints

PADDING_ID = 0


class DLRM(nn.Module):
    """CTR model. ``forward(dense float32[B, D], sparse int64[B, F]) -> logits float32[B]``.

    With ``multi_hot=True`` the sparse input is ``int64[B, F, L]``: field ``i`` is a bag of
    up to ``L`` IDs padded with ``PADDING_ID`` (0); the bag embedding is the sum of its
    non-padding rows (so ID 0 is reserved in every field and never contributes).
    """

    input_names = ("dense", "sparse")
    task = "ctr"
    output = "logit"
    zoo_name = "dlrm"

    def __init__(
        self,
        vocab_sizes: Sequence[int],
        dense_dim: int,
        embedding_dim: int = 16,
        bottom_mlp: Sequence[int] = (64,),
        top_mlp: Sequence[int] = (64, 32),
        multi_hot: bool = False,
    ):
        super().__init__()
        vocab_sizes = positive_ints("vocab_sizes", vocab_sizes, allow_empty=False)
        (dense_dim, embedding_dim) = positive_ints("dense_dim/embedding_dim", (dense_dim, embedding_dim))
        bottom_mlp = positive_ints("bottom_mlp", bottom_mlp)
        top_mlp = positive_ints("top_mlp", top_mlp)
        multi_hot = bool(multi_hot)
        if multi_hot and min(vocab_sizes) < 2:
            raise ValueError("multi_hot=True reserves ID 0 for padding: every vocab size must be >= 2")
        self.config = dict(vocab_sizes=list(vocab_sizes), dense_dim=dense_dim, embedding_dim=embedding_dim,
                           bottom_mlp=list(bottom_mlp), top_mlp=list(top_mlp), multi_hot=multi_hot)
        self.vocab_sizes = vocab_sizes
        self.dense_dim = dense_dim
        self.embedding_dim = embedding_dim
        self.multi_hot = multi_hot
        self.num_fields = len(vocab_sizes)

        self.bottom = mlp(dense_dim, (*bottom_mlp, embedding_dim), final_relu=True)
        self.embeddings = nn.ModuleList(
            nn.EmbeddingBag(n, embedding_dim, mode="sum", padding_idx=PADDING_ID if multi_hot else None)
            for n in vocab_sizes
        )
        # N(0, 1) (the EmbeddingBag default) overfits rare ids badly; small init
        # as in the DLRM reference code trains to a much better AUC
        for bag in self.embeddings:
            nn.init.normal_(bag.weight, std=0.05)
            if multi_hot:
                with torch.no_grad():
                    bag.weight[PADDING_ID].zero_()
        n_vec = self.num_fields + 1  # bottom output + one vector per field
        # Strictly-upper-triangle pairs (i < j) of the n_vec x n_vec interaction matrix.
        # Derived constant, so not saved in state_dict (in an ExportedProgram it is in ep.constants).
        self.register_buffer("triu_idx", torch.triu_indices(n_vec, n_vec, offset=1), persistent=False)
        n_pairs = n_vec * (n_vec - 1) // 2
        self.top = mlp(embedding_dim + n_pairs, (*top_mlp, 1), final_relu=False)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = self.bottom(dense)  # [B, d]
        vectors = [x]
        for i, bag in enumerate(self.embeddings):
            if self.multi_hot:
                vectors.append(bag(sparse[:, i, :]))  # [B, L] -> [B, d]
            else:
                vectors.append(bag(sparse[:, i : i + 1]))  # bag of one ID -> [B, d]
        t = torch.stack(vectors, dim=1)  # [B, F+1, d]
        z = torch.bmm(t, t.transpose(1, 2))  # [B, F+1, F+1]
        pairs = z[:, self.triu_idx[0], self.triu_idx[1]]  # [B, P]
        out = self.top(torch.cat([x, pairs], dim=1))  # [B, 1]
        return out.squeeze(-1)

    def example_inputs(self, batch_size: int = 4, *, bag_size: int = 3,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Random valid ``(dense, sparse)``; multi-hot bags get random trailing padding."""
        dense = torch.randn(batch_size, self.dense_dim, generator=generator)
        if not self.multi_hot:
            sparse = torch.stack(
                [torch.randint(0, n, (batch_size,), generator=generator) for n in self.vocab_sizes], dim=1)
            return dense, sparse
        ids = torch.stack(
            [torch.randint(1, n, (batch_size, bag_size), generator=generator) for n in self.vocab_sizes], dim=1)
        lengths = torch.randint(0, bag_size + 1, (batch_size, self.num_fields, 1), generator=generator)
        keep = torch.arange(bag_size).view(1, 1, bag_size) < lengths
        return dense, torch.where(keep, ids, torch.full_like(ids, PADDING_ID))
