"""A small pre-LayerNorm transformer block for the token fusion operators.

Attention is written as plain matmuls and a softmax (not `nn.MultiheadAttention` or
`scaled_dot_product_attention`) so that `torch.utils.flop_counter` sees every matrix
product on the CPU and an operator's FLOP count can be checked against a hand count.
"""
from __future__ import annotations

from torch import Tensor, nn


class Block(nn.Module):
    """`x + MHA(LN(x))`, then `x + MLP(LN(x))` with GELU: `(B, S, D) -> (B, S, D)`.

    `qkv` packs the query, key and value projections row-wise (`[W_q; W_k; W_v]`),
    and inside each the heads are consecutive slices of `D / heads` features.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"Block: heads={heads} must divide dim={dim}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)

    def attention(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """Multi-head self-attention over all `S` tokens (`key_mask` `(B, S)`: only True keys
        are attended to): `(B, S, D) -> (B, S, D)`."""
        b, s, d = x.shape
        hd = d // self.heads
        qkv = self.qkv(x).view(b, s, 3, self.heads, hd).permute(2, 0, 3, 1, 4)  # (3, B, h, S, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        logits = (q @ k.transpose(-2, -1)) * hd**-0.5  # (B, h, S, S)
        if key_mask is not None:
            logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        weights = logits.softmax(dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(b, s, d)  # (B, S, D)
        return self.proj(out)

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        x = x + self.attention(self.norm1(x), key_mask)
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))
