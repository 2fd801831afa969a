"""MambaOutClsHead and the mmpretrain ImageNet configs."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

import mmmambaout  # noqa: F401  (registers the models)
import mmmambaout.checkpoint
from mmmambaout.checkpoint import MAMBAOUT_RELEASE_URL
from mmmambaout.models.backbones.mambaout import ARCH_SETTINGS
from mmmambaout.models.heads import MambaOutClsHead

timm = pytest.importorskip('timm')

REPO = Path(__file__).resolve().parents[3]
LETTERS = dict(f='femto', k='kobe', t='tiny', s='small', b='base')


def test_head_forward_loss_predict():
    from mmpretrain.structures import DataSample
    head = MambaOutClsHead(num_classes=10, in_channels=32, topk=(1, 5))
    head.init_weights()
    assert head.fc1.weight.shape == (128, 32) and head.fc2.weight.shape == (10, 128)
    assert head.fc1.bias.abs().sum() == 0 and abs(head.fc1.weight.std() - 0.02) < 0.005
    feats = (torch.randn(2, 16, 5, 5), torch.randn(2, 32, 3, 4))
    assert head(feats).shape == (2, 10)
    assert head.pre_logits(feats).shape == (2, 128)
    samples = [DataSample().set_gt_label(i) for i in (1, 7)]
    losses = head.loss(feats, samples)
    assert losses['loss'].ndim == 0 and losses['loss'] > 0
    preds = head.predict(feats)
    assert len(preds) == 2 and preds[0].pred_score.shape == (10, )
    with pytest.raises(ValueError, match='NCHW'):
        head((torch.randn(2, 32), ))
    with pytest.raises(ValueError, match='positive'):
        MambaOutClsHead(num_classes=0, in_channels=32)


def test_head_pretrained_from_timm_safetensors(tmp_path, timm_femto):
    from safetensors.torch import save_file
    path = tmp_path / 'model.safetensors'
    save_file({k: v.contiguous() for k, v in timm_femto.state_dict().items()}, str(path))
    head = MambaOutClsHead(1000, 288, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    head.init_weights()
    x = torch.randn(2, 7, 7, 288)
    with torch.no_grad():
        ref = timm_femto.forward_head(x)
        ours = head((x.permute(0, 3, 1, 2), ))
    assert (ours - ref).abs().max() < 1e-4


@pytest.mark.parametrize('letter', list(LETTERS))
def test_configs(letter):
    cfg = Config.fromfile(str(REPO / f'configs/mambaout_{letter}_in1k.py'))
    arch = LETTERS[letter]
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.custom_imports == dict(imports=['mmmambaout'], allow_failed_imports=False)
    assert cfg.model.backbone.arch == arch and cfg.model.backbone.norm_out is False
    assert cfg.model.head.in_channels == ARCH_SETTINGS[arch]['dims'][-1]
    assert cfg.load_from == f'{MAMBAOUT_RELEASE_URL}mambaout_{arch}.pth'
    resize = cfg.test_dataloader.dataset.pipeline[1]
    assert resize.scale == 224 and resize.interpolation == 'bicubic'  # crop_pct 1.0
    assert cfg.test_dataloader.dataset.data_root == 'data/imagenet'


def test_classifier_loads_official_release_url(monkeypatch, tmp_path, timm_femto,
                                               femto_official_state_dict):
    """`load_from=<official URL>` yields timm's logits (the URL's file is faked here)."""
    from mmengine.runner import load_checkpoint
    from mmpretrain.registry import MODELS

    path = tmp_path / 'mambaout_femto.pth'
    torch.save(femto_official_state_dict, path)
    url = f'{MAMBAOUT_RELEASE_URL}mambaout_femto.pth'
    real = mmmambaout.checkpoint.load_checkpoint_file
    seen = []

    def fake(name, *args, **kwargs):
        seen.append(name)
        return real(path if name == url else name, *args, **kwargs)

    monkeypatch.setattr(mmmambaout.checkpoint, 'load_checkpoint_file', fake)
    cfg = Config.fromfile(str(REPO / 'configs/mambaout_f_in1k.py'))
    cfg.model.data_preprocessor = cfg.data_preprocessor
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):  # other tests may set mmdet/mmseg
        model = MODELS.build(cfg.model).eval()
    load_checkpoint(model, cfg.load_from, map_location='cpu', strict=True)
    assert seen == [url]
    img = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = model(img, mode='tensor')
        ref = timm_femto(img)
    assert (ours - ref).abs().max() < 1e-4


def test_config_runs_test_loop(monkeypatch, tmp_path, timm_femto, femto_official_state_dict):
    """`Runner.test()` on the femto config: official-URL `load_from` (file faked), the eval
    pipeline, ImageNet layout (meta/val.txt), Accuracy; predictions equal timm's."""
    from mmengine.runner import Runner
    from PIL import Image

    ckpt = tmp_path / 'mambaout_femto.pth'
    torch.save(femto_official_state_dict, ckpt)
    url = f'{MAMBAOUT_RELEASE_URL}mambaout_femto.pth'
    real = mmmambaout.checkpoint.load_checkpoint_file
    monkeypatch.setattr(mmmambaout.checkpoint, 'load_checkpoint_file',
                        lambda name, *a, **k: real(ckpt if name == url else name, *a, **k))
    root = tmp_path / 'imagenet'
    (root / 'val').mkdir(parents=True)
    (root / 'meta').mkdir()
    gen = torch.Generator().manual_seed(0)
    images = []
    for n, (h, w) in enumerate([(240, 320), (300, 256)]):
        arr = torch.randint(0, 256, (h, w, 3), generator=gen, dtype=torch.uint8).numpy()
        Image.fromarray(arr).save(root / 'val' / f'{n}.JPEG', quality=95)
        images.append(root / 'val' / f'{n}.JPEG')
    # label each image with timm's prediction on the same preprocessing -> top-1 = 100
    from torchvision.transforms import v2 as T
    prep = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC),
                      T.CenterCrop(224), T.ToImage(), T.ToDtype(torch.float32, scale=True),
                      T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    with torch.no_grad():
        labels = [timm_femto(prep(Image.open(p).convert('RGB'))[None]).argmax().item()
                  for p in images]
    (root / 'meta' / 'val.txt').write_text(
        ''.join(f'{n}.JPEG {label}\n' for n, label in enumerate(labels)))

    cfg = Config.fromfile(str(REPO / 'configs/mambaout_f_in1k.py'))
    cfg.work_dir = str(tmp_path / 'work')
    cfg.test_dataloader.update(batch_size=2, num_workers=0)
    cfg.test_dataloader.dataset.data_root = str(root)
    cfg.test_dataloader.dataset.pop('split')
    cfg.test_dataloader.dataset.update(ann_file='meta/val.txt', data_prefix='val')
    cfg.val_dataloader = cfg.test_dataloader
    cfg.log_level = 'WARNING'
    metrics = Runner.from_cfg(cfg).test()
    assert metrics['accuracy/top1'] == 100.0
