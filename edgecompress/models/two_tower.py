"""Two-tower retrieval model: a user tower and an item tower map IDs to vectors in
a shared space; the score is their dot product (item vectors can be precomputed)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import mlp, positive_ints


class TwoTower(nn.Module):
    """Retrieval model. ``forward(user_id int64[B], item_id int64[B]) -> score float32[B]``.

    user tower: nn.Embedding -> MLP;  item tower: nn.EmbeddingBag(sum) over a one-ID bag -> MLP.
    The last tower layer has no ReLU. ``score`` is an unnormalised dot product.
    """

    input_names = ("user_id", "item_id")
    task = "retrieval"
    output = "score"
    zoo_name = "two_tower"

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embedding_dim: int = 32,
        tower: Sequence[int] = (64, 32),
    ):
        super().__init__()
        (num_users, num_items, embedding_dim) = positive_ints(
            "num_users/num_items/embedding_dim", (num_users, num_items, embedding_dim))
        tower = positive_ints("tower", tower)
        self.config = dict(num_users=num_users, num_items=num_items,
                           embedding_dim=embedding_dim, tower=list(tower))
        self.num_users = num_users
        self.num_items = num_items
        self.embedding_dim = embedding_dim
        self.output_dim = tower[-1] if tower else embedding_dim

        self.user_table = nn.Embedding(num_users, embedding_dim)
        self.item_table = nn.EmbeddingBag(num_items, embedding_dim, mode="sum")
        self.user_tower = mlp(embedding_dim, tower, final_relu=False)
        self.item_tower = mlp(embedding_dim, tower, final_relu=False)
        nn.init.normal_(self.user_table.weight, std=0.1)
        nn.init.normal_(self.item_table.weight, std=0.1)

    def user_embedding(self, user_id: torch.Tensor) -> torch.Tensor:
        """int64[B] -> float32[B, output_dim]"""
        return self.user_tower(self.user_table(user_id))

    def item_embedding(self, item_id: torch.Tensor) -> torch.Tensor:
        """int64[B] -> float32[B, output_dim]"""
        return self.item_tower(self.item_table(item_id.unsqueeze(1)))

    def forward(self, user_id: torch.Tensor, item_id: torch.Tensor) -> torch.Tensor:
        u = self.user_embedding(user_id)
        v = self.item_embedding(item_id)
        return (u * v).sum(dim=1)

    def example_inputs(self, batch_size: int = 4, *,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.randint(0, self.num_users, (batch_size,), generator=generator),
                torch.randint(0, self.num_items, (batch_size,), generator=generator))
