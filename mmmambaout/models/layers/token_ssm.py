"""A selective-scan (Mamba S6) token mixer over the tokens of a 2D feature map.

What a Mamba block adds to a Gated CNN block (MambaOut paper, Fig. 1 / Sec. 3): after the
convolution, an SSM whose step size ``delta``, input matrix ``B`` and output matrix ``C``
depend on the token. The feature map ``(B, H, W, C)`` is read as one sequence of ``H*W``
tokens in row-major order and scanned

* ``bidirectional=True`` (Vim-style): forward, and over the flipped sequence with its own
  ``x_proj``, ``dt_proj``, ``A_log`` and ``D``; the two outputs are averaged;
* ``bidirectional=False`` (causal, as Mamba for language): forward only, token ``t``
  sees tokens ``<= t``.

Per direction (Mamba's parametrisation): ``x_proj`` maps each token to ``(dt, B, C)``
(``dt_rank = ceil(C / 16)``, ``d_state`` N each), ``delta = softplus(dt_proj(dt))``,
``A = -exp(A_log)`` (S4D-real init ``A_log[c, n] = log(n + 1)``), skip term ``D`` (ones),
``dt_proj``'s bias set so that ``softplus(bias)`` is log-uniform in [1e-3, 0.1]. The scan
is :func:`mmmambaout.ops.selective_scan` (the exact reference on the CPU, Triton on CUDA);
both directions run as one scan over ``2C`` channels with B / C grouped per direction.
"""
import math

import torch
import torch.nn as nn

from mmmambaout.ops.selective_scan import selective_scan


def _fp32(t):
    """The SSM parameters in at least float32 (kept so under mixed precision, as Mamba)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class TokenSSM(nn.Module):
    """``(B, H, W, C) -> (B, H, W, C)``; see the module docstring."""

    def __init__(self, channels: int, d_state: int = 16, bidirectional: bool = True,
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4):
        super().__init__()
        self.channels, self.d_state, self.bidirectional = channels, d_state, bidirectional
        self.dt_rank = math.ceil(channels / 16)
        self.dt_range, self.dt_init_floor = (dt_min, dt_max), dt_init_floor
        directions = 2 if bidirectional else 1
        self.x_proj = nn.ModuleList(
            nn.Linear(channels, self.dt_rank + 2 * d_state, bias=False)
            for _ in range(directions))
        self.dt_proj = nn.ModuleList(nn.Linear(self.dt_rank, channels) for _ in range(directions))
        self.A_log = nn.Parameter(torch.empty(directions * channels, d_state))
        self.D = nn.Parameter(torch.empty(directions * channels))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """Mamba's initialisation (state-spaces/mamba ``Mamba.__init__``)."""
        (dt_min, dt_max), rank = self.dt_range, self.dt_rank
        for x_proj, dt_proj in zip(self.x_proj, self.dt_proj):
            nn.init.kaiming_uniform_(x_proj.weight, a=math.sqrt(5))   # nn.Linear's default
            nn.init.uniform_(dt_proj.weight, -rank**-0.5, rank**-0.5)
            dt = torch.exp(torch.rand(self.channels) * (math.log(dt_max) - math.log(dt_min))
                           + math.log(dt_min)).clamp(min=self.dt_init_floor)
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))     # softplus^-1(dt)
        self.A_log.copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32))
                         .repeat(self.A_log.shape[0], 1))
        self.D.fill_(1.)

    def forward(self, x):
        b, h, w, c = x.shape
        R, N = self.dt_rank, self.d_state
        seq = x.reshape(b, h * w, c)                                   # (B, L, C)
        seqs = [seq, seq.flip(1)] if self.bidirectional else [seq]
        dbl = torch.stack([proj(s) for proj, s in zip(self.x_proj, seqs)], dim=1)
        dt, Bs, Cs = torch.split(dbl, [R, N, N], dim=-1)               # (B, dirs, L, .)
        delta = torch.cat([dt[:, i] @ proj.weight.t() for i, proj in enumerate(self.dt_proj)],
                          dim=-1).transpose(1, 2)                      # (B, dirs*C, L)
        u = torch.cat(seqs, dim=-1).transpose(1, 2)                    # (B, dirs*C, L)
        y = selective_scan(
            u, delta, -torch.exp(_fp32(self.A_log)), Bs.transpose(-1, -2),
            Cs.transpose(-1, -2), D=_fp32(self.D),
            delta_bias=_fp32(torch.cat([p.bias for p in self.dt_proj])), delta_softplus=True)
        if self.bidirectional:
            y_f, y_b = y.chunk(2, dim=1)
            y = (y_f + y_b.flip(-1)) / 2
        return y.transpose(1, 2).reshape(b, h, w, c)

    def extra_repr(self):
        return (f'{self.channels}, d_state={self.d_state}, '
                f'{"bidirectional" if self.bidirectional else "causal"}')
