# mmdet's stock components in place of the [speed] ones of our Mask R-CNN configs, an
# eager MambaOut and the composite token mixer: the same model and math, the baseline
# that benchmarks and tests compare against. Used by the configs in configs/stock/:
#   _base_ = ['../mask_rcnn_mambaout_t_1x_coco.py', '../_base_/stock/mask_rcnn.py']
#   model = {{_base_.stock_model}}
#   optim_wrapper = {{_base_.stock_optim_wrapper}}
#   custom_hooks = []
stock_model = dict(
    data_preprocessor=dict(type='DetDataPreprocessor'),
    backbone=dict(fused_mixer=False),
    rpn_head=dict(type='RPNHead', anchor_generator=dict(type='AnchorGenerator'),
                  bbox_coder=dict(type='DeltaXYWHBBoxCoder')),
    roi_head=dict(
        bbox_roi_extractor=dict(type='SingleRoIExtractor'),
        mask_roi_extractor=dict(type='SingleRoIExtractor'),
        bbox_head=dict(type='Shared2FCBBoxHead', bbox_coder=dict(type='DeltaXYWHBBoxCoder')),
        mask_head=dict(type='FCNMaskHead')),
    train_cfg=dict(
        rpn=dict(assigner=dict(type='MaxIoUAssigner',
                               iou_calculator=dict(type='BboxOverlaps2D')),
                 sampler=dict(type='RandomSampler')),
        rcnn=dict(assigner=dict(type='MaxIoUAssigner',
                                iou_calculator=dict(type='BboxOverlaps2D')),
                  sampler=dict(type='RandomSampler'))))
stock_optim_wrapper = dict(constructor='DefaultOptimWrapperConstructor')
