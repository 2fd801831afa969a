# Vim-Small (middle class token), ImageNet-1k evaluation of the released weights
# (80.5 top-1 reported by the authors; configs/metafiles/vim.yml). The "+" weights
# (`*_ft_*`, 81.6) were fine-tuned with overlapping patches (stride 8): see vim_t_in1k.py.
_base_ = './vim_t_in1k.py'
model = dict(backbone=dict(arch='small'), head=dict(in_channels=384))
load_from = ('https://huggingface.co/hustvl/Vim-small-midclstok/resolve/main/'
             'vim_s_midclstok_80p5acc.pth')
