"""Memory fusion (MFN, Zadeh et al. AAAI 2018): LSTMs per modality, delta-memory attention, gated memory.

Each modality m runs its own LSTM over its sequence (cell state `c^m_t`, hidden `h^m_t`);
the LSTMs never see each other. At every step the cell states of all modalities at
`t-1` and `t` are concatenated, `ĉ = [c_{t-1}; c_t]` (the modalities in sorted order
inside each half), and

    a   = softmax(D_a ĉ)                          delta-memory attention over the 2n entries
    ĉa  = ĉ ⊙ a
    û   = tanh(D_u ĉa)
    γ1  = σ(D_γ1 ĉa),  γ2 = σ(D_γ2 ĉa)
    u_t = γ1 ⊙ u_{t-1} + γ2 ⊙ û                   multi-view gated memory

with `c_0 = u_0 = 0` and each `D_*` one `Linear`. The output is
`Linear([h^1_T; ...; h^M_T; u_T])`. As in the paper and its official code
(`pliang279/MFN`), the attention reads the LSTM *cell* states `c`; the official code
also feeds `u_{t-1}` to the gates and uses 2-layer MLPs for each `D_*` (the paper's
equations, followed here, do neither). Unlike both, the initial hidden states `h^m_0`
are learnt (initialised N(0, 0.02²), not 0): a vector input is a one-step sequence,
and with `h_0 = 0` its recurrent weights would be dead parameters.

Sequences of different lengths are aligned to the longest, `T = max_m T_m`, by
nearest-index resampling: step `t` (0-based) reads token `floor(t T_m / T)` of modality
m, so a shorter sequence is held over (each token repeated about `T / T_m` times, order
kept) and a vector `(B, d)` is one token repeated at every step.

FLOPs (see `cost.py`): every `Linear` is counted — the input projections once per
*original* token (they are computed before resampling, which only repeats them), the
recurrent projections, `D_a` and `[D_u; D_γ1; D_γ2]` once per step, the output once. The LSTM gates, the attention
product `ĉ ⊙ a` and the gated memory update are elementwise and not counted; no
modality-mixing multiply escapes the `Linear`s, so `interaction_flops` is 0.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from fusion_ops._registry import register_fusion
from fusion_ops.base import FusionOp
from spaces.args import Arg

DEFAULT_HIDDEN = 16
DEFAULT_MEM = 16


def align_steps(x: Tensor, steps: int) -> Tensor:
    """`(B, T, k) -> (B, steps, k)`: step `t` reads token `floor(t T / steps)` (nearest-index hold)."""
    t = x.shape[1]
    if t == steps:
        return x
    index = torch.arange(steps, device=x.device) * t // steps
    return x.index_select(1, index)


def _align_per_sample(projected: list[Tensor], lengths: list[Tensor]) -> tuple[list[Tensor], Tensor]:
    """Per-sample nearest-index alignment of padded sequences: `(B, steps, k)` per modality and
    `active` `(B, steps)` bool, with `T_b = max_m L_mb` steps for sample b and `steps = max_b T_b`."""
    lens = torch.stack(lengths, dim=1).clamp(min=1)  # (B, M)
    total = lens.max(dim=1).values  # (B,) = T_b
    steps = int(total.max())
    t = torch.arange(steps, device=lens.device)
    out = []
    for p, n in zip(projected, lens.unbind(dim=1), strict=True):
        index = torch.minimum(t[None, :] * n[:, None] // total[:, None], n[:, None] - 1)  # (B, steps)
        out.append(p.gather(1, index.unsqueeze(-1).expand(-1, -1, p.shape[-1])))
    return out, t[None, :] < total[:, None]


def lstm_step(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """`(h_t, c_t)` from the pre-activations `W_x x_t + b + W_h h_{t-1}` `(B, 4k)`, gates in order i, f, g, o."""
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


@register_fusion("memory")
class MemoryFusion(FusionOp):
    """Memory fusion: `(B, T_m, d_m)` or `(B, d_m)` per modality -> `(B, out_dim)`.

    Parameters, lists in sorted-name order: `input_gates[m]` (`W_x`, `b` of modality m's
    LSTM, `d_m -> 4 hidden`), `hidden_gates[m]` (`W_h`, `hidden -> 4 hidden`, no bias),
    `h0` (`(M, hidden)`, the initial hidden states `h^m_0`),
    `attention` (`D_a`, `2n -> 2n` with `n = M hidden`), `memory` (`D_u`, `D_γ1`, `D_γ2`
    stacked row-wise, `2n -> 3 mem`), `out` (`n + mem -> out_dim`).
    """

    ARGS = (
        Arg("hidden", "int", DEFAULT_HIDDEN, low=4, high=128, doc="LSTM size per modality"),
        Arg("mem", "int", DEFAULT_MEM, low=4, high=128, doc="size of the gated memory u"),
    )
    TOKEN_INPUTS = True

    def __init__(
        self, in_dims: Mapping[str, int], out_dim: int, *, hidden: int = DEFAULT_HIDDEN, mem: int = DEFAULT_MEM
    ) -> None:
        super().__init__(in_dims, out_dim, hidden=hidden, mem=mem)
        k, mem = self.args["hidden"], self.args["mem"]
        n = len(self.names) * k
        # lists in sorted-name order: modality names need not be valid ModuleDict keys
        self.input_gates = nn.ModuleList(nn.Linear(self.in_dims[m], 4 * k) for m in self.names)
        self.hidden_gates = nn.ModuleList(nn.Linear(k, 4 * k, bias=False) for _ in self.names)
        self.h0 = nn.Parameter(torch.empty(len(self.names), k))
        nn.init.normal_(self.h0, std=0.02)
        self.attention = nn.Linear(2 * n, 2 * n)  # D_a
        self.memory = nn.Linear(2 * n, 3 * mem)  # [D_u; D_γ1; D_γ2]
        self.out = nn.Linear(n + mem, out_dim)

    def final_states(self, feats: Mapping[str, Tensor],
                     masks: Mapping[str, Tensor] | None = None) -> tuple[list[Tensor], Tensor]:
        """The last hidden states `h^m_T` `(B, hidden)`, modalities sorted, and the memory `u_T` `(B, mem)`.

        With `masks` (padded tokens), each sample is aligned on its own real lengths
        (`T_b = max_m L_mb` steps, step t reading token `floor(t L_mb / T_b)`) and its
        states stop changing after its last step, so padding never changes the result.
        """
        tokens = self.tokens(feats)
        real = self.token_masks(tokens, masks)
        # project the original tokens, then resample: repeating a token repeats its projection
        projected = [lin(x) for lin, x in zip(self.input_gates, tokens, strict=True)]  # (B, T_m, 4k)
        if real is None:
            steps = max(x.shape[1] for x in tokens)
            pre = [align_steps(p, steps) for p in projected]  # (B, T, 4k)
            active = None
        else:
            pre, active = _align_per_sample(projected, [r.sum(dim=1) for r in real])
            steps = pre[0].shape[1]
        batch, k = tokens[0].shape[0], self.args["hidden"]
        # copies, not views: a parameter view fed to a submodule trips the FLOP counter under no_grad
        hs = [h0.repeat(batch, 1) for h0 in self.h0]  # (B, k) each
        cs = [tokens[0].new_zeros(batch, k)] * len(pre)
        u = tokens[0].new_zeros(batch, self.args["mem"])
        for t in range(steps):
            c_prev, h_prev, u_prev = cs, hs, u
            gates = [p[:, t] + w(h) for p, w, h in zip(pre, self.hidden_gates, hs, strict=True)]  # (B, 4k)
            stepped = [lstm_step(g, c) for g, c in zip(gates, cs, strict=True)]
            hs, cs = [h for h, _ in stepped], [c for _, c in stepped]
            c_hat = torch.cat([*c_prev, *cs], dim=1)  # (B, 2n): [c_{t-1}; c_t]
            attended = c_hat * torch.softmax(self.attention(c_hat), dim=1)
            u_hat, g1, g2 = self.memory(attended).chunk(3, dim=1)  # (B, mem) each
            u = torch.sigmoid(g1) * u + torch.sigmoid(g2) * torch.tanh(u_hat)
            if active is not None:  # a sample past its own last step keeps its states
                on = active[:, t : t + 1]  # (B, 1)
                hs = [torch.where(on, h, hp) for h, hp in zip(hs, h_prev, strict=True)]
                cs = [torch.where(on, c, cp) for c, cp in zip(cs, c_prev, strict=True)]
                u = torch.where(on, u, u_prev)
        return hs, u

    def forward(self, feats: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> Tensor:
        hs, u = self.final_states(feats, masks)
        return self.out(torch.cat([*hs, u], dim=1))  # (B, n + mem) -> (B, out_dim)
