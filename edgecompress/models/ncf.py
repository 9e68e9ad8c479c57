"""NeuMF (He et al., 2017, "Neural Collaborative Filtering"): a generalized matrix
factorization (GMF) path and an MLP path over separate user/item embeddings, fused by a
final linear layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from . import layers
from .layers import positive_ints


class NeuMF(nn.Module):
    """Retrieval/NCF model. ``forward(user_id int64[B], item_id int64[B]) -> logit float32[B]``.

    ``mlp=(64, 32, 16)`` follows the paper: user and item MLP embeddings have
    ``mlp[0] // 2`` dims each (concatenated: mlp[0]), then Linear+ReLU layers mlp[1:].
    logit = Linear(concat(gmf_u * gmf_i, mlp_out)).
    """

    input_names = ("user_id", "item_id")
    task = "retrieval"
    output = "logit"
    zoo_name = "neumf"

    def __init__(
        self,
        num_users: int,
        num_items: int,
        mf_dim: int = 16,
        mlp: Sequence[int] = (64, 32, 16),
    ):
        super().__init__()
        (num_users, num_items, mf_dim) = positive_ints("num_users/num_items/mf_dim", (num_users, num_items, mf_dim))
        mlp = positive_ints("mlp", mlp, allow_empty=False)
        if mlp[0] % 2:
            raise ValueError(f"mlp[0] is the concatenated user+item embedding size and must be even, got {mlp[0]}")
        self.config = dict(num_users=num_users, num_items=num_items, mf_dim=mf_dim, mlp=list(mlp))
        self.num_users = num_users
        self.num_items = num_items

        self.gmf_user = nn.Embedding(num_users, mf_dim)
        self.gmf_item = nn.Embedding(num_items, mf_dim)
        self.mlp_user = nn.Embedding(num_users, mlp[0] // 2)
        self.mlp_item = nn.Embedding(num_items, mlp[0] // 2)
        self.mlp = layers.mlp(mlp[0], mlp[1:], final_relu=True)
        self.predict = nn.Linear(mf_dim + mlp[-1], 1)
        for table in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(table.weight, std=0.01)

    def forward(self, user_id: torch.Tensor, item_id: torch.Tensor) -> torch.Tensor:
        gmf = self.gmf_user(user_id) * self.gmf_item(item_id)  # [B, mf_dim]
        h = self.mlp(torch.cat([self.mlp_user(user_id), self.mlp_item(item_id)], dim=1))  # [B, mlp[-1]]
        return self.predict(torch.cat([gmf, h], dim=1)).squeeze(-1)

    def example_inputs(self, batch_size: int = 4, *,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.randint(0, self.num_users, (batch_size,), generator=generator),
                torch.randint(0, self.num_items, (batch_size,), generator=generator))
