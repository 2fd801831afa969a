"""MambaOut with SSM stages (``token_mixers``): shapes and parameter counts, the SSM mixer
against a plain loop of the recurrence (float64, 1e-10), causality, and official MambaOut
weights loading into the Gated CNN stages."""
import logging
import math

import pytest
import torch

from mmmambaout.models.backbones import MambaOut
from mmmambaout.models.layers import TokenSSM

HYBRID = ('gated_cnn', 'gated_cnn', 'bi_ssm', 'bi_ssm')


def ssm_params(channels, d_state=16, directions=2):
    rank = math.ceil(channels / 16)
    per_direction = channels * (rank + 2 * d_state) + rank * channels + channels
    return directions * (per_direction + channels * d_state + channels)


@pytest.mark.parametrize('mixers', [HYBRID, ('gated_cnn', ) * 3 + ('causal_ssm', ),
                                    ('bi_ssm', ) * 4])
def test_shapes_and_parameter_counts(mixers):
    plain, hybrid = MambaOut('tiny'), MambaOut('tiny', token_mixers=mixers)
    extra = sum(depth * ssm_params(dim, directions=1 if m == 'causal_ssm' else 2)
                for depth, dim, m in zip(plain.depths, plain.dims, mixers) if m != 'gated_cnn')
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(hybrid) == count(plain) + extra
    with torch.no_grad():
        outs = hybrid.eval()(torch.randn(1, 3, 70, 45))
    assert [tuple(o.shape) for o in outs] == [(1, 96, 18, 12), (1, 192, 9, 6), (1, 384, 5, 3),
                                             (1, 576, 3, 2)]


def loop_scan(ssm, x, direction):
    """The recurrence token by token: h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t,
    y_t = C_t . h_t + D u_t, over the row-major tokens (reversed for direction 1)."""
    b, h, w, c = x.shape
    seq = x.reshape(b, h * w, c)
    if direction:
        seq = seq.flip(1)
    R, N = ssm.dt_rank, ssm.d_state
    dt, B, C = torch.split(ssm.x_proj[direction](seq), [R, N, N], dim=-1)
    delta = torch.nn.functional.softplus(ssm.dt_proj[direction](dt))       # (b, L, c)
    A = -torch.exp(ssm.A_log[direction * c:(direction + 1) * c])          # (c, N)
    D = ssm.D[direction * c:(direction + 1) * c]
    state, ys = torch.zeros(b, c, N, dtype=x.dtype), []
    for t in range(seq.shape[1]):
        state = (torch.exp(delta[:, t, :, None] * A) * state
                 + delta[:, t, :, None] * B[:, t, None, :] * seq[:, t, :, None])
        ys.append((state * C[:, t, None, :]).sum(-1) + D * seq[:, t])
    y = torch.stack(ys, 1)
    return (y.flip(1) if direction else y).reshape(b, h, w, c)


@pytest.mark.parametrize('bidirectional', [True, False])
def test_token_ssm_against_a_plain_loop(bidirectional):
    torch.manual_seed(0)
    ssm = TokenSSM(8, d_state=4, bidirectional=bidirectional).double()
    with torch.no_grad():
        ssm.A_log.add_(torch.randn_like(ssm.A_log) * 0.3)   # away from the init's pattern
        ssm.D.add_(torch.randn_like(ssm.D))
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    with torch.no_grad():
        ref = loop_scan(ssm, x, 0)
        if bidirectional:
            ref = (ref + loop_scan(ssm, x, 1)) / 2
        torch.testing.assert_close(ssm(x), ref, rtol=0, atol=1e-10)


def test_ssm_block_is_the_gated_cnn_block_with_a_scan():
    """out = x + fc2(GELU(g) * cat(i, SSM(SiLU(dwconv(c))))) with the block's own layers."""
    torch.manual_seed(0)
    model = MambaOut(dict(depths=(1, ), dims=(16, )), out_indices=(0, ), norm_out=False,
                     token_mixers=('bi_ssm', )).double()
    block = model.stages[0].blocks[0]
    x = torch.randn(2, 4, 6, 16, dtype=torch.float64)
    y = block.fc1(block.norm(x))
    g, i, c = torch.split(y, [block.hidden, block.hidden - 16, 16], dim=-1)
    c = block.conv(c.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    mix = torch.nn.functional.gelu(g) * torch.cat((i, block.ssm(torch.nn.functional.silu(c))), -1)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x + block.fc2(mix), rtol=0, atol=1e-12)


def test_causal_stage_ignores_later_tokens():
    torch.manual_seed(0)
    ssm = TokenSSM(8, d_state=4, bidirectional=False)
    x = torch.randn(1, 4, 4, 8)
    x2 = x.clone()
    x2[:, 2:, :] += 1.0     # tokens from row 2 on (row-major: index >= 8)
    with torch.no_grad():
        a, b = ssm(x).reshape(1, 16, 8), ssm(x2).reshape(1, 16, 8)
    assert torch.equal(a[:, :8], b[:, :8]) and not torch.allclose(a[:, 8:], b[:, 8:])
    bi = TokenSSM(8, d_state=4)
    with torch.no_grad():
        assert not torch.allclose(bi(x).reshape(1, 16, 8)[:, :8], bi(x2).reshape(1, 16, 8)[:, :8])


def test_official_weights_load_into_the_gated_cnn_stages(tmp_path, timm_femto,
                                                         femto_official_state_dict, log):
    path = tmp_path / 'mambaout_femto.pth'
    torch.save(femto_official_state_dict, path)
    plain = MambaOut('femto', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    hybrid = MambaOut('femto', token_mixers=HYBRID,
                      init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    plain.init_weights()
    fresh = TokenSSM(192).state_dict()
    hybrid.init_weights()
    assert log.text() == ''  # nothing unexpected or missing beyond the expected keys
    assert 'stages.2.blocks.0.ssm.A_log' in log.text(logging.INFO)
    hybrid_sd, plain_sd = hybrid.state_dict(), plain.state_dict()
    for k, v in plain_sd.items():
        assert torch.equal(hybrid_sd[k], v), k   # every Gated CNN weight as loaded
    ssm = hybrid.stages[2].blocks[0].ssm.state_dict()
    assert torch.equal(ssm['A_log'], fresh['A_log']) and torch.equal(ssm['D'], fresh['D'])


def test_from_scratch_keeps_mambas_init_and_only_gated_cnn_stages_compile():
    model = MambaOut('femto', token_mixers=HYBRID)
    model.init_weights()
    ssm = model.stages[3].blocks[0].ssm
    assert ssm.x_proj[0].weight.std() > 0.03   # kaiming-uniform, not trunc-normal 0.02
    dt = torch.nn.functional.softplus(ssm.dt_proj[0].bias)
    assert 1e-4 <= dt.min() and dt.max() <= 0.1 + 1e-6
    model.compile_blocks(True)
    assert [s.compile_name for s in model.stages] == ['mambaout_stage0', 'mambaout_stage1',
                                                      None, None]
    with pytest.raises(ValueError, match='token_mixers must name one of'):
        MambaOut('femto', token_mixers=('ssm', ) * 4)
