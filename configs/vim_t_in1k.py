# Vim-Tiny (middle class token), ImageNet-1k evaluation of the released weights
# (76.1 top-1 reported by the authors; configs/metafiles/vim.yml).
#   python tools/test.py configs/vim_t_in1k.py <checkpoint, or omit to use load_from>
# Eval preprocessing as upstream (vim/datasets.py, eval_crop_ratio 0.875): resize the
# shorter side to int(224 / 0.875) = 256 (bicubic), center crop 224, ImageNet mean/std.
# `load_from` may point at the released Hugging Face URL directly: mmmambaout registers a
# checkpoint loader for it that maps the upstream keys to this model (head -> head.fc).
# The "+" weights (`*_ft_*`, 78.3) were fine-tuned with overlapping patches (stride 8):
#   --cfg-options model.backbone.patch_stride=8 load_from=<..._ft_78p3acc.pth URL>
_base_ = './_base_/imagenet_eval.py'

arch = 'tiny'
embed_dims = 192
img_size = 224
eval_crop_ratio = 0.875

model = dict(
    type='ImageClassifier',
    backbone=dict(type='Vim', arch=arch, img_size=img_size, out_type='cls_token',
                  drop_path_rate=0.0),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=embed_dims,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))
load_from = ('https://huggingface.co/hustvl/Vim-tiny-midclstok/resolve/main/'
             'vim_t_midclstok_76p1acc.pth')

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=int(img_size / eval_crop_ratio), edge='short',
         backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
