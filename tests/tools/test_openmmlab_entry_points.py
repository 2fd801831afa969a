"""OpenMMLab's own entry points on our configs and checkpoints, each in a fresh interpreter
that never imports mmmambaout itself (the config's ``custom_imports`` does), on the CPU:

* mmdet's ``DetInferencer`` and ``init_detector`` / ``inference_detector``, mmseg's
  ``MMSegInferencer`` and ``init_model`` / ``inference_model``;
* ``demo/image_demo.py`` for detection and segmentation;
* mmdet's and mmseg's ``tools/test.py`` (from their installed ``.mim/tools``), mmdet's
  ``browse_dataset.py``, ``analyze_logs.py plot_curve`` and ``confusion_matrix.py``;
* the model and optimizer that mmdet's ``tools/train.py``, ``mim train mmmambaout`` and our
  ``tools/train.py`` build from one config (a probe hook writes them down);
* ``mim train`` / ``mim test`` / ``mim download`` run from another directory than the
  checkout (an editable install must lead mim to the checkout, see setup.py).

Each check is one subprocess; they run two at a time (two CPU cores), started by a module
fixture for the tests that were selected. Two tiny trainings (one iteration each) give the
checkpoints: our ``tools/train.py`` on the detection demo with the probe (its checkpoint,
json log and probe serve the other checks) and on the segmentation demo.
"""
import functools
import glob
import http.server
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DET_CONFIG = ROOT / 'configs/demo/mask_rcnn_mambaout_demo.py'
SEG_CONFIG = ROOT / 'configs/demo/upernet_mambaout_demo.py'
BIN = Path(sys.executable).parent
MIM = BIN / 'mim'
SITE_TOOLS = {name: Path(importlib.util.find_spec(name).origin).parent / '.mim' / 'tools'
              for name in ('mmdet', 'mmseg')}  # their installed tools, found without importing
PROBE_FILE = 'entry_point_probe.json'
RESULT = 'RESULT '  # prefix of the JSON line the python -c checks print

# The detection demo with the probe hook, tiny data and one iteration. The optim wrapper
# is the demo's own (OptimWrapper: a CPU demo); mmdet's train.py would refuse the real
# configs' AmpOptimWrapper without a GPU.
DET_PROBE_CONFIG = '''
_base_ = {base!r}
custom_imports = dict(imports=['mmmambaout', 'entry_point_probe'], allow_failed_imports=False)
data_root = {data_root!r}
image_scale = (128, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor')),
]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_begin=2)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1),
                     entry_point_probe=dict(type='EntryPointProbeHook'))
'''

SEG_TINY_CONFIG = '''
_base_ = {base!r}
data_root = {data_root!r}
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=1, val_begin=2)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=1)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
'''

DET_APIS = '''
import json, sys
config, checkpoint, image, out_dir = sys.argv[1:]
from mmdet.apis import DetInferencer, init_detector, inference_detector
imported_by_apis = 'mmmambaout' in sys.modules
inferencer = DetInferencer(model=config, weights=checkpoint, device='cpu', show_progress=False)
pred = inferencer(image, out_dir=out_dir, pred_score_thr=0.0, no_save_pred=True)['predictions'][0]
model = init_detector(config, checkpoint, device='cpu')
sample = inference_detector(model, image)
print('RESULT ' + json.dumps(dict(
    imported_by_apis=imported_by_apis, imported_after='mmmambaout' in sys.modules,
    inferencer_backbone=type(inferencer.model.backbone).__name__,
    inferencer_keys=sorted(pred), inferencer_labels=pred['labels'],
    api_backbone=type(model.backbone).__name__, classes=list(model.dataset_meta['classes']),
    api_labels=sample.pred_instances.labels.tolist(),
    api_masks=list(sample.pred_instances.masks.shape))))
'''

SEG_APIS = '''
import json, sys
config, checkpoint, image, out_dir = sys.argv[1:]
from mmseg.apis import MMSegInferencer, init_model, inference_model
imported_by_apis = 'mmmambaout' in sys.modules
inferencer = MMSegInferencer(model=config, weights=checkpoint, device='cpu')
pred = inferencer(image, out_dir=out_dir)['predictions']
model = init_model(config, checkpoint, device='cpu')
sample = inference_model(model, image)
print('RESULT ' + json.dumps(dict(
    imported_by_apis=imported_by_apis, imported_after='mmmambaout' in sys.modules,
    inferencer_backbone=type(inferencer.model.backbone).__name__,
    inferencer_shape=list(pred.shape), inferencer_labels=sorted(set(pred.ravel().tolist())),
    api_backbone=type(model.backbone).__name__, classes=list(model.dataset_meta['classes']),
    api_shape=list(sample.pred_sem_seg.data.shape))))
'''

# `mim download` as the console script runs it (mim.cli), with the one network call, the
# checkpoint download, sent to a local server: mim resolves the package, reads
# model-index.yml and the config from the checkout; the file comes from 127.0.0.1.
MIM_DOWNLOAD = '''
import sys
import mim.utils
server, dest = sys.argv[1:]
download = mim.utils.download_from_file
def local_download(url, dest_path, **kwargs):
    print('mim asked for ' + url)
    return download(server + url.rsplit('/', 1)[-1], dest_path, **kwargs)
mim.utils.download_from_file = local_download  # mim's download command imports it from here
from mim.cli import cli
sys.argv = ['mim', 'download', 'mmmambaout', '--config', 'mambaout_femto_in1k', '--dest', dest]
cli()
'''
ZOO_NAME, ZOO_FILE = 'mambaout_femto_in1k', 'mambaout_femto.pth'
ZOO_URL = 'https://github.com/yuweihao/MambaOut/releases/download/model/mambaout_femto.pth'


def _env(**extra):
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1', MPLBACKEND='Agg',
               PYTHONWARNINGS='ignore')
    env.pop('PYTHONPATH', None)
    env.update(extra)
    return env


def _run(cmd, cwd, env=None, timeout=600):
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                         env=env or _env(), timeout=timeout)
    out.log = out.stdout + out.stderr
    return out


def _ok(out):
    assert out.returncode == 0, out.log[-4000:]
    return out


def _result(out):
    _ok(out)
    lines = [line for line in out.stdout.splitlines() if line.startswith(RESULT)]
    assert lines, out.log[-4000:]
    return json.loads(lines[-1][len(RESULT):])


class Jobs:
    """Subprocess checks run two at a time; ``get(name)`` waits for one. A job is submitted
    after the jobs it needs, so the pool (first in, first out) cannot wait on itself."""

    def __init__(self, workers=2):
        self.pool = ThreadPoolExecutor(workers)
        self.futures = {}
        self.seconds = {}  # wall time of each job (`pytest -s` prints them at the end)

    def submit(self, name, fn, *needs):
        needs = [self.futures[n] for n in needs]

        def job():
            args = [f.result() for f in needs]
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self.seconds[name] = round(time.perf_counter() - start, 1)

        self.futures[name] = self.pool.submit(job)

    def get(self, name):
        if name not in self.futures:
            pytest.fail(f'job {name!r} was not started (its test was not selected?)')
        return self.futures[name].result()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):

    def log_message(self, *args):
        pass


@pytest.fixture(scope='module')
def file_server(tmp_path_factory):
    """A local HTTP server for mim's download (no network here)."""
    root = tmp_path_factory.mktemp('served')
    (root / ZOO_FILE).write_bytes(os.urandom(4096))
    server = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{server.server_address[1]}/', root
    server.shutdown()


@pytest.fixture(scope='module')
def jobs(request, tmp_path_factory, file_server):
    from mmmambaout.datasets.demo_data import make_ade_demo, make_coco_demo
    tmp = tmp_path_factory.mktemp('entry_points')
    coco = make_coco_demo(tmp / 'data', num_train=2, num_val=2, image_size=(96, 128))
    ade = make_ade_demo(tmp / 'data', num_train=2, num_val=2, image_size=(96, 128))
    coco_root, ade_root = coco['data_root'] + '/', ade['data_root']
    det_image = sorted(glob.glob(osp.join(coco['val_img_dir'], '*.jpg')))[0]
    seg_image = sorted(glob.glob(osp.join(ade['val_img_dir'], '*.jpg')))[0]
    elsewhere = tmp / 'cwd'  # every command runs here, outside the checkout
    elsewhere.mkdir()
    det_probe_cfg, seg_cfg = tmp / 'det_probe.py', tmp / 'seg_tiny.py'
    det_probe_cfg.write_text(DET_PROBE_CONFIG.format(base=str(DET_CONFIG), data_root=coco_root))
    seg_cfg.write_text(SEG_TINY_CONFIG.format(base=str(SEG_CONFIG), data_root=ade_root))
    probe_env = _env(PYTHONPATH=str(HERE))  # the probe hook module, nothing else
    det_data = [f'test_dataloader.dataset.data_root={coco_root}',
                f'test_evaluator.ann_file={coco_root}annotations/instances_val2017.json',
                'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False']
    seg_data = [f'test_dataloader.dataset.data_root={ade_root}',
                'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False']
    py = sys.executable
    w = {name: tmp / name for name in ('ours', 'mmdet', 'mim', 'seg')}
    mmdet_tools, mmseg_tools = SITE_TOOLS['mmdet'], SITE_TOOLS['mmseg']

    def run(*cmd, env=None):
        return _run(cmd, elsewhere, env)

    def train(work, *cmd, env=probe_env):
        out = _run(cmd, elsewhere, env)
        out.work_dir = work
        return out

    def ckpt(train_out):
        _ok(train_out)
        return (Path(train_out.work_dir) / 'last_checkpoint').read_text().strip()

    def json_log(train_out):
        _ok(train_out)
        return glob.glob(str(Path(train_out.work_dir) / '*/vis_data/[0-9]*.json'))

    # name: (function, names of the jobs whose results it takes)
    all_jobs = {
        # the two trainings whose checkpoints the other checks use; ours with the probe
        'train_ours': (lambda: train(w['ours'], py, ROOT / 'tools/train.py', det_probe_cfg,
                                     '--work-dir', w['ours']), ),
        'train_seg': (lambda: train(w['seg'], py, ROOT / 'tools/train.py', seg_cfg,
                                    '--work-dir', w['seg'], env=_env()), ),
        'train_mmdet': (lambda: train(w['mmdet'], py, mmdet_tools / 'train.py', det_probe_cfg,
                                      '--work-dir', w['mmdet']), ),
        'train_mim': (lambda: train(w['mim'], MIM, 'train', 'mmmambaout', det_probe_cfg,
                                    '--work-dir', w['mim']), ),
        'det_apis': (lambda t: run(py, '-c', DET_APIS, DET_CONFIG, ckpt(t), det_image,
                                   tmp / 'det_apis'), 'train_ours'),
        'seg_apis': (lambda t: run(py, '-c', SEG_APIS, SEG_CONFIG, ckpt(t), seg_image,
                                   tmp / 'seg_apis'), 'train_seg'),
        'demo_det': (lambda t: run(py, ROOT / 'demo/image_demo.py', det_image, DET_CONFIG,
                                   '--weights', ckpt(t), '--device', 'cpu', '--out-dir',
                                   tmp / 'demo_det', '--pred-score-thr', '0'), 'train_ours'),
        'demo_seg': (lambda t: run(py, ROOT / 'demo/image_demo.py', seg_image, SEG_CONFIG,
                                   '--weights', ckpt(t), '--out-dir', tmp / 'demo_seg'),
                     'train_seg'),
        'mmdet_test': (lambda t: run(py, mmdet_tools / 'test.py', DET_CONFIG, ckpt(t),
                                     '--work-dir', tmp / 'mmdet_test', '--out',
                                     tmp / 'results.pkl', '--cfg-options', *det_data),
                       'train_ours'),
        'confusion_matrix': (lambda t: _ok(t) and run(
            py, mmdet_tools / 'analysis_tools/confusion_matrix.py', DET_CONFIG,
            tmp / 'results.pkl', tmp / 'confusion', '--cfg-options', *det_data), 'mmdet_test'),
        'mmseg_test': (lambda t: run(py, mmseg_tools / 'test.py', SEG_CONFIG, ckpt(t),
                                     '--work-dir', tmp / 'mmseg_test', '--cfg-options',
                                     *seg_data), 'train_seg'),
        'browse_dataset': (lambda: run(
            py, mmdet_tools / 'analysis_tools/browse_dataset.py', DET_CONFIG, '--not-show',
            '--output-dir', tmp / 'browse', '--cfg-options',
            f'train_dataloader.dataset.data_root={coco_root}', 'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False'), ),
        'analyze_logs': (lambda t: run(py, mmdet_tools / 'analysis_tools/analyze_logs.py',
                                       'plot_curve', *json_log(t), '--keys', 'loss', '--out',
                                       tmp / 'loss.png'), 'train_ours'),
        'mim_test': (lambda t: run(MIM, 'test', 'mmmambaout', DET_CONFIG, '--checkpoint',
                                   ckpt(t), '--work-dir', tmp / 'mim_test', '--cfg-options',
                                   *det_data), 'train_ours'),
        'mim_download': (lambda: run(py, '-c', MIM_DOWNLOAD, file_server[0],
                                     tmp / 'downloaded'), ),
    }
    # the jobs each test needs, in submission order (a job after the jobs it needs)
    needs = {
        'test_det_apis_register_through_custom_imports': ['train_ours', 'det_apis'],
        'test_seg_apis_register_through_custom_imports': ['train_seg', 'seg_apis'],
        'test_image_demo_draws_detection_and_segmentation': ['train_ours', 'train_seg',
                                                             'demo_det', 'demo_seg'],
        'test_mmdet_test_py_and_confusion_matrix': ['train_ours', 'mmdet_test',
                                                    'confusion_matrix'],
        'test_mmseg_test_py': ['train_seg', 'mmseg_test'],
        'test_mmdet_browse_dataset': ['browse_dataset'],
        'test_mmdet_analyze_logs_plot_curve': ['train_ours', 'analyze_logs'],
        'test_same_model_and_optimizer_from_mmdet_mim_and_our_train_py': [
            'train_ours', 'train_mmdet', 'train_mim'],
        'test_mim_test_from_another_directory': ['train_ours', 'mim_test'],
        'test_mim_download_from_another_directory': ['mim_download'],
    }
    selected = {item.originalname for item in request.session.items
                if item.module is request.module}
    wanted = {job for test, names in needs.items() if test in selected for job in names}
    runner = Jobs()
    for name, (fn, *deps) in all_jobs.items():  # trainings first: they gate the rest
        if name in wanted:
            runner.submit(name, fn, *deps)
    runner.paths = dict(tmp=tmp, work=w, det_image=det_image, seg_image=seg_image,
                        served=file_server[1])
    yield runner
    runner.pool.shutdown(wait=True, cancel_futures=True)
    print(f'\nentry point jobs, seconds each: {runner.seconds}')


def _image_shape(path):
    import cv2
    img = cv2.imread(str(path))
    assert img is not None, f'not an image: {path}'
    return img.shape


def test_det_apis_register_through_custom_imports(jobs):
    res = _result(jobs.get('det_apis'))
    assert res['imported_by_apis'] is False  # importing mmdet.apis did not import us ...
    assert res['imported_after'] is True     # ... the config's custom_imports did
    assert res['inferencer_backbone'] == res['api_backbone'] == 'MambaOut'
    assert res['classes'] == ['disc', 'square', 'triangle', 'ring', 'star', 'cross']
    assert {'labels', 'scores', 'bboxes', 'masks'} <= set(res['inferencer_keys'])
    assert all(0 <= label < 6 for label in res['inferencer_labels'] + res['api_labels'])
    assert len(res['api_labels']) == res['api_masks'][0]
    drawn = jobs.paths['tmp'] / 'det_apis' / 'vis' / osp.basename(jobs.paths['det_image'])
    assert _image_shape(drawn)[:2] == _image_shape(jobs.paths['det_image'])[:2]


def test_seg_apis_register_through_custom_imports(jobs):
    res = _result(jobs.get('seg_apis'))
    assert res['imported_by_apis'] is False
    assert res['imported_after'] is True
    assert res['inferencer_backbone'] == res['api_backbone'] == 'MambaOut'
    assert res['classes'] == ['wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road']
    height, width = _image_shape(jobs.paths['seg_image'])[:2]
    assert res['inferencer_shape'] == [height, width]
    assert res['api_shape'] == [1, height, width]
    assert set(res['inferencer_labels']) <= set(range(7))
    drawn = jobs.paths['tmp'] / 'seg_apis' / 'vis' / osp.basename(jobs.paths['seg_image'])
    assert _image_shape(drawn)[:2] == (height, width)


def test_image_demo_draws_detection_and_segmentation(jobs, tmp_path):
    for task, image in (('det', jobs.paths['det_image']), ('seg', jobs.paths['seg_image'])):
        out = _ok(jobs.get(f'demo_{task}'))
        drawn = jobs.paths['tmp'] / f'demo_{task}' / 'vis' / osp.basename(image)
        assert f'prediction drawn: {drawn}' in out.stdout
        assert _image_shape(drawn)[:2] == _image_shape(image)[:2]
    # a missing image, config or checkpoint: one line, exit status 2, no traceback
    ckpt = (jobs.paths['work']['ours'] / 'last_checkpoint').read_text().strip()
    image, missing = jobs.paths['det_image'], tmp_path / 'missing'
    for args, message in (
            ([missing, DET_CONFIG, '--weights', ckpt], f'image not found: {missing}'),
            ([image, missing, '--weights', ckpt], f'config not found: {missing}'),
            ([image, DET_CONFIG, '--weights', missing], f'checkpoint not found: {missing}')):
        out = _run([sys.executable, ROOT / 'demo/image_demo.py', *args], tmp_path)
        assert out.returncode == 2, out.log
        assert out.stderr.splitlines() == [f'error: {message}'], out.log


def test_mmdet_test_py_and_confusion_matrix(jobs):
    out = _ok(jobs.get('mmdet_test'))
    assert 'coco/bbox_mAP:' in out.log and 'coco/segm_mAP:' in out.log
    assert (jobs.paths['tmp'] / 'results.pkl').stat().st_size > 0
    _ok(jobs.get('confusion_matrix'))
    _image_shape(jobs.paths['tmp'] / 'confusion' / 'confusion_matrix.png')


def test_mmseg_test_py(jobs):
    out = _ok(jobs.get('mmseg_test'))
    assert 'mIoU:' in out.log and 'aAcc:' in out.log


def test_mmdet_browse_dataset(jobs):
    _ok(jobs.get('browse_dataset'))
    drawn = sorted(p.name for p in (jobs.paths['tmp'] / 'browse').iterdir())
    assert len(drawn) == 2  # the two training images, with their annotations drawn


def test_mmdet_analyze_logs_plot_curve(jobs):
    out = _ok(jobs.get('analyze_logs'))
    assert 'save curve to:' in out.stdout
    _image_shape(jobs.paths['tmp'] / 'loss.png')


def test_same_model_and_optimizer_from_mmdet_mim_and_our_train_py(jobs):
    probes = {}
    for name in ('ours', 'mmdet', 'mim'):
        out = _ok(jobs.get(f'train_{name}'))
        probe = json.loads((jobs.paths['work'][name] / PROBE_FILE).read_text())
        probes[name] = probe
        assert 'Epoch(train) [1][1/1]' in out.log, (name, out.log[-2000:])
    ours = probes['ours']
    assert ours['modules']['backbone'].endswith('.MambaOut')
    assert ours['optim_wrapper'].endswith('.OptimWrapper')  # fp32 on the CPU, as the demo says
    assert len(ours['param_groups']) >= 2  # decay and no-decay at least
    for name in ('mmdet', 'mim'):
        theirs = probes[name]
        for key in ('runner', 'optim_wrapper', 'optimizer', 'num_parameters', 'param_groups'):
            assert theirs[key] == ours[key], (name, key)
        assert theirs['modules'] == ours['modules'], name
    # mim ran the checkout's tools/train.py, found from a directory outside the checkout
    assert f"Training command is {sys.executable} {ROOT / 'mmmambaout/.mim/tools/train.py'}" \
        in jobs.get('train_mim').stdout


def test_mim_test_from_another_directory(jobs):
    out = _ok(jobs.get('mim_test'))
    assert f"Testing command is {sys.executable} {ROOT / 'mmmambaout/.mim/tools/test.py'}" \
        in out.stdout  # the checkout's tools/test.py, found from outside the checkout
    assert 'coco/bbox_mAP:' in out.log


def test_mim_download_from_another_directory(jobs):
    out = _ok(jobs.get('mim_download'))
    assert f'mim asked for {ZOO_URL}' in out.stdout  # the metafile's URL
    dest = jobs.paths['tmp'] / 'downloaded'
    assert (dest / ZOO_FILE).read_bytes() == (jobs.paths['served'] / ZOO_FILE).read_bytes()
    config = (dest / f'{ZOO_NAME}.py').read_text()  # the config, as mim dumped it
    assert "type='MambaOut'" in config and "custom_imports" in config
