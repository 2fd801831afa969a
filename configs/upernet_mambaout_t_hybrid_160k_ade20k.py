# UperNet, MambaOut-Tiny with Mamba blocks (bidirectional selective scan after the 7x7 conv,
# Vim-style) in stages 0-1: the stages whose token count exceeds the paper's long-sequence
# threshold 6D at ADE20K's 512x512 crops (L / tau = 28.4, 3.56; stages 2-3: 0.44, 0.07;
# tools/analysis/sequence_length.py). Everything else is the MambaOut-T recipe.
_base_ = './upernet_mambaout_t_160k_ade20k.py'
model = dict(backbone=dict(token_mixers=('bi_ssm', 'bi_ssm', 'gated_cnn', 'gated_cnn')))
