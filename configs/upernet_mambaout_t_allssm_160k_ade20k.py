# UperNet, MambaOut-Tiny with Mamba blocks (bidirectional selective scan after the 7x7 conv)
# in all four stages (see ./upernet_mambaout_t_hybrid_160k_ade20k.py).
_base_ = './upernet_mambaout_t_160k_ade20k.py'
model = dict(backbone=dict(token_mixers=('bi_ssm', ) * 4))
