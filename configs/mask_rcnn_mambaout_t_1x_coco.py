# Mask R-CNN + FPN, MambaOut-Tiny backbone, COCO 2017 1x (12 epochs), batch 16 = 8 GPUs x 2,
# AdamW lr 1e-4, CUDA AMP. Paper (Table 2): tiny box/mask AP as in README.
#
# Components marked [speed] compute what mmdet's stock ones compute, with fewer host-device
# synchronisations, Python loops and kernel launches (tests compare their losses and
# gradients; docs/training_speed.md says what each does). configs/stock/ has this config
# with mmdet's stock components, for side-by-side comparisons.
_base_ = [
    './_base_/models/mask_rcnn_mambaout_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    './_base_/schedules/adamw_1x_amp.py',
    './_base_/det_runtime.py',
]
pretrained = 'https://github.com/yuweihao/MambaOut/releases/download/model/mambaout_tiny.pth'
model = dict(
    data_preprocessor=dict(type='LazyMaskPadDetDataPreprocessor'),  # [speed]
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 576]),
    rpn_head=dict(  # [speed] all three
        type='BatchedRPNHead', anchor_generator=dict(type='CachedAnchorGenerator'),
        bbox_coder=dict(type='SyncFreeDeltaXYWHBBoxCoder')),
    roi_head=dict(  # [speed] all five (the bbox head: its test-time NMS)
        bbox_roi_extractor=dict(type='LevelSortedRoIExtractor'),
        mask_roi_extractor=dict(type='LevelSortedRoIExtractor'),
        bbox_head=dict(type='ClassBatchedNMSBBoxHead',
                       bbox_coder=dict(type='SyncFreeDeltaXYWHBBoxCoder')),
        mask_head=dict(type='OnDeviceTargetFCNMaskHead')),
    train_cfg=dict(  # [speed] all six
        rpn=dict(assigner=dict(type='SyncFreeMaxIoUAssigner',
                               iou_calculator=dict(type='SyncFreeBboxOverlaps2D')),
                 sampler=dict(type='SyncFreeRandomSampler')),
        rcnn=dict(assigner=dict(type='SyncFreeMaxIoUAssigner',
                                iou_calculator=dict(type='SyncFreeBboxOverlaps2D')),
                  sampler=dict(type='SyncFreeRandomSampler'))))
# [speed] one param group per distinct setting (one optimizer step, not ~200); with the
# parameters on CUDA, PyTorch's fused AdamW step unless the optimizer sets fused / foreach
optim_wrapper = dict(constructor='MergedParamGroupsOptimWrapperConstructor')
# [speed] on a GPU with Triton, compile MambaOut's stages and replay them as CUDA graphs in
# training steps (compiled without graphs under gradient accumulation or several
# processes); a backbone whose compile_stages is set keeps that setting
custom_hooks = [dict(type='MambaOutCompileHook', cuda_graphs=True, memory_budget=0.5)]
train_dataloader = dict(batch_size=2, num_workers=2)
