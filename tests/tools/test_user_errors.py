"""User errors of the tools get one clear message: ``error: <problem and fix>`` on stderr,
exit status 2, no traceback (``MMMAMBAOUT_DEBUG=1`` / ``--debug``: the traceback); Ctrl-C
in tools/train.py: one line with where it stopped, the last checkpoint and the command
that resumes, exit status 130; nothing already in the work dir is touched.

Every case runs the real tool in a subprocess. They all start together, three at a
time, when the first test asks for them (the ``runs`` fixture): argument errors take
half a second (they fail before torch is imported), config errors the few seconds of
mmengine's Config.fromfile, and the few that need the registries or torch ten.
"""
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DET = 'configs/mask_rcnn_mambaout_t_1x_coco.py'
DEMO = 'configs/demo/upernet_mambaout_demo.py'
ENV = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
ENV.pop('MMMAMBAOUT_DEBUG', None)


class _RunsCode:
    """Unpickling this would run ``os.system``."""

    def __reduce__(self):
        return (os.system, ('echo pwned',))


DEMO_CLASSES = "('disc','square','triangle','ring','star','cross')"


def _run(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, env=env or ENV, timeout=timeout)


def _data_roots(root):
    return [f'{k}_dataloader.dataset.data_root={root}/' for k in ('train', 'val', 'test')]


def _snapshot(folder):
    return {str(p.relative_to(folder)): (p.is_dir(), p.stat().st_mtime_ns,
                                         None if p.is_dir() else
                                         hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob('*'))}


def _interrupt_training(data_root, work_dir):
    """tools/train.py on the demo config, Ctrl-C (SIGINT) once iter_2.pth is complete."""
    cmd = [sys.executable, 'tools/train.py', DEMO, '--work-dir', str(work_dir),
           '--cfg-options', *_data_roots(data_root), 'train_dataloader.batch_size=2',
           *[f'{k}_dataloader.{o}' for k in ('train', 'val', 'test')
             for o in ('num_workers=0', 'persistent_workers=False')],
           'train_cfg.max_iters=1000', 'default_hooks.checkpoint.interval=2',
           'default_hooks.logger.interval=1']
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = [], []
    readers = [threading.Thread(target=lambda s=s, b=b: b.extend(s), daemon=True)
               for s, b in ((proc.stdout, out), (proc.stderr, err))]
    for r in readers:
        r.start()
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        if (work_dir / 'last_checkpoint').is_file():
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.2)
    try:
        proc.wait(timeout=120)
    finally:
        proc.kill()
    for r in readers:
        r.join(10)
    return subprocess.CompletedProcess(cmd, proc.returncode, ''.join(out), ''.join(err))


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp('user_errors')
    f = {}
    f['empty'] = d / 'empty.pth'
    f['empty'].write_bytes(b'')
    f['text'] = d / 'notes.pth'
    f['text'].write_text('these are my notes, not weights\n')
    f['random'] = d / 'random.pth'
    f['random'].write_bytes(b'\x13\x37' + random.Random(0).randbytes(4094))
    good = d / 'good.pth'
    torch.save({'state_dict': {'w': torch.arange(4096.)}}, good)
    f['truncated'] = d / 'truncated.pth'
    f['truncated'].write_bytes(good.read_bytes()[:good.stat().st_size // 2])
    f['runs_code'] = d / 'runs_code.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}, 'x': _RunsCode()}, f['runs_code'])
    f['whole_model'] = d / 'whole_model.pth'  # torch.save(model): needs the class
    torch.save(torch.nn.Linear(2, 2), f['whole_model'])
    # enough of a COCO layout for the dataset check (the runs fail before reading it)
    f['coco'] = d / 'coco'
    for sub in ('annotations', 'train2017', 'val2017'):
        (f['coco'] / sub).mkdir(parents=True)
    for name in ('instances_train2017.json', 'instances_val2017.json'):
        (f['coco'] / 'annotations' / name).write_text('{}')
    (f['coco'] / 'train2017' / 'a.jpg').write_bytes(b'x')
    (f['coco'] / 'val2017' / 'a.jpg').write_bytes(b'x')
    # a work dir from an earlier run: the failing runs below must not touch it
    wd = f['work_dir'] = d / 'work_dir'
    (wd / '20250101_000000' / 'vis_data').mkdir(parents=True)
    torch.save({'state_dict': {'w': torch.ones(3)}, 'meta': {'epoch': 1}}, wd / 'epoch_1.pth')
    (wd / 'last_checkpoint').write_text(str(wd / 'epoch_1.pth'))
    (wd / '20250101_000000' / '20250101_000000.log').write_text('epoch 1 done\n')
    (wd / '20250101_000000' / 'vis_data' / 'scalars.json').write_text('{"loss": 1.0}\n')
    f['snapshot'] = _snapshot(wd)
    subprocess.run([sys.executable, 'tools/misc/make_demo_data.py', '--out', str(d / 'demo'),
                    '--kind', 'all', '--num-train', '8', '--num-val', '2', '--min-size', '64',
                    '--max-size', '96'], cwd=ROOT, env=ENV, check=True, capture_output=True)
    f['ade'] = d / 'demo' / 'ade' / 'ADEChallengeData2016'
    f['tmp'] = d
    return f


def _cases(f):
    wd = ['--work-dir', f['work_dir']]
    coco = _data_roots(f['coco'])
    train, test = 'tools/train.py', 'tools/test.py'
    conv = 'tools/model_converters/mambaout2mmmambaout.py'
    return {
        # need the registries or torch (slowest first)
        'interrupt': lambda: _interrupt_training(f['ade'], f['tmp'] / 'interrupted'),
        'arch': (train, DET, *wd, '--cfg-options', *coco, 'model.backbone.with_cp=True',
                 'model.backbone.arch=tinyy'),
        'typo_arg': (train, DET, *wd, '--cfg-options', *coco, 'model.backbone.drop_path_rat=0.1'),
        'whole_model': (test, DET, f['whole_model'], *wd, '--cfg-options', *coco),
        # a pretrained checkpoint that cannot be downloaded (nothing listens on port 9)
        # (the demo images, whose classes are set with sub-keys of a new argument)
        'offline': lambda: _run(
            train, DET, '--work-dir', f['tmp'] / 'offline', '--cfg-options',
            *_data_roots(f['tmp'] / 'demo' / 'coco'),
            *[f'{k}_dataloader.dataset.metainfo.classes={DEMO_CLASSES}'
              for k in ('train', 'val', 'test')],
            *[f'{k}_evaluator.ann_file={f["tmp"]}/demo/coco/annotations/instances_val2017.json'
              for k in ('val', 'test')],
            'model.roi_head.bbox_head.num_classes=6', 'model.roi_head.mask_head.num_classes=6',
            'model.backbone.init_cfg.checkpoint=http://127.0.0.1:9/mambaout_tiny.pth',
            env=dict(ENV, MMMAMBAOUT_CACHE=str(f['tmp'] / 'cache'))),
        'missing_parent': (train, DET, *wd, '--cfg-options', *coco, 'model.bakbone.arch=tiny'),
        # need the config (mmengine's Config.fromfile)
        'dataset': (train, DET, *wd, '--cfg-options',
                    f'train_dataloader.dataset.data_root={f["tmp"]}/nowhere/'),
        'removed_key': (train, DET, *wd, '--cfg-options', 'train_speedups=False'),
        'num_classes': (train, DET, *wd, '--cfg-options', *coco,
                        f'train_dataloader.dataset.metainfo.classes={DEMO_CLASSES}'),
        'load_from': (train, DET, *wd, '--cfg-options', f'load_from={f["tmp"]}/nothere.pth'),
        'init_cfg': (train, DET, *wd, '--cfg-options',
                     f'model.backbone.init_cfg.checkpoint={f["tmp"]}/pretrained.pth'),
        # argument errors: before torch is imported
        'config': (train, 'configs/mask_rcnn_mambaout_t_1x_coo.py', *wd),
        'config_importtime': ('-X', 'importtime', test, 'configs/mask_rcnn_mambaout_t_1x_coo.py',
                              'x.pth'),
        'checkpoint': (test, DET, f['tmp'] / 'goood.pth', *wd),
        'resume': (train, DET, *wd, '--resume', f['tmp'] / 'epoch_12.pth'),
        **{f'not_ckpt_{k}': (test, DET, f[k], *wd)
           for k in ('empty', 'text', 'random', 'truncated', 'runs_code')},
        'resume_runs_code': (train, DET, *wd, '--resume', f['runs_code']),
        'converter_missing': (conv, f['tmp'] / 'mambaout_tiny.pth', f['tmp'] / 'out.pth'),
        'converter_runs_code': (conv, f['runs_code'], f['tmp'] / 'out.pth'),
        'zoo_name': ('tools/download_checkpoint.py', 'mambaout_tiny_in1kk'),
        'debug_flag': (train, 'configs/mask_rcnn_mambaout_t_1x_coo.py', '--debug'),
        'eval_config': (train, 'configs/vim_t_in1k.py', *wd),
    }


@pytest.fixture(scope='module')
def runs(files):
    """Every case, run once: {name: CompletedProcess}, and how long all of them took."""
    start = time.time()
    cases = _cases(files)
    debug_env = dict(ENV, MMMAMBAOUT_DEBUG='1')
    with ThreadPoolExecutor(3) as pool:
        futures = {name: pool.submit(case) if callable(case) else pool.submit(_run, *case)
                   for name, case in cases.items()}
        futures['debug_env'] = pool.submit(_run, 'tools/test.py', DET, 'missing.pth',
                                           env=debug_env)
        results = {name: fut.result() for name, fut in futures.items()}
    print(f'{len(results)} tool runs in {time.time() - start:.1f} s')
    return results


def _user_error(out, *words):
    """One `error:` message with ``words``, exit status 2, no traceback; returns it."""
    log = out.stdout + out.stderr
    assert out.returncode == 2, log[-3000:]
    assert 'Traceback' not in log, log[-3000:]
    assert out.stderr.count('error: ') == 1, out.stderr
    message = out.stderr[out.stderr.index('error: '):]
    for word in words:
        assert word in message, (word, message)
    return message


def test_missing_config_suggests_the_closest(runs):
    message = _user_error(runs['config'], 'config file not found',
                          'configs/mask_rcnn_mambaout_t_1x_coo.py',
                          'Did you mean configs/mask_rcnn_mambaout_t_1x_coco.py?')
    assert runs['config'].stdout == '' and message.count('\n') == 1


def test_argument_errors_fail_before_torch_is_imported(runs):
    out = runs['config_importtime']
    assert out.returncode == 2 and 'config file not found' in out.stderr
    imported = {line.split('|')[-1].strip() for line in out.stderr.splitlines()
                if line.startswith('import time:')}
    assert not {'torch', 'mmdet', 'mmcv', 'mmseg', 'mmpretrain', 'mmmambaout'} & imported


def test_debug_shows_the_traceback(runs):
    for name in ('debug_flag', 'debug_env'):
        out = runs[name]
        assert out.returncode == 1 and 'Traceback' in out.stderr, out.stderr
        assert 'UserError' in out.stderr, out.stderr


def test_missing_dataset(runs, files):
    _user_error(runs['dataset'], 'dataset not found or incomplete',
                f'{files["tmp"]}/nowhere/annotations/instances_train2017.json',
                'data/coco/annotations/instances_val2017.json',
                '--cfg-options train_dataloader.dataset.data_root=/path/to/dataset')
    assert 'MaskRCNN' not in runs['dataset'].stdout  # before any model


@pytest.mark.parametrize('case, words', [
    ('checkpoint', ['CHECKPOINT: checkpoint not found', 'goood.pth', 'Did you mean',
                    'good.pth', 'download_checkpoint.py']),
    ('resume', ['--resume: checkpoint not found', 'epoch_12.pth',
                '--resume without a value']),
    ('load_from', ['load_from: checkpoint not found', 'nothere.pth',
                   '--cfg-options load_from=PATH']),
    ('init_cfg', ['model.backbone.init_cfg.checkpoint: checkpoint not found',
                  'pretrained.pth', 'model.backbone.init_cfg=None']),
    ('converter_missing', ['SRC: checkpoint not found', 'mambaout_tiny.pth']),
    ('offline', ['could not download http://127.0.0.1:9/mambaout_tiny.pth',
                 'If you are offline, download', 'cache', 'mambaout_tiny.pth']),
    ('zoo_name', ["'mambaout_tiny_in1kk' is not in the model zoo",
                  'Did you mean: mambaout_tiny_in1k']),
])
def test_missing_checkpoint(runs, case, words):
    _user_error(runs[case], *words)


@pytest.mark.parametrize('kind, words', [
    ('empty', ['is not a checkpoint: it is an empty file (0 bytes)', 'fetch or copy it again']),
    ('text', ["a text file (32 bytes, starting with 'these are my notes, not weights')"]),
    ('random', ['neither a zip archive (what torch.save writes), a pickle nor a safetensors',
                '13 37']),
    ('truncated', ['a truncated or damaged zip archive', 'fetch or copy it again']),
])
def test_not_a_checkpoint_says_what_it_is(runs, files, kind, words):
    message = _user_error(runs[f'not_ckpt_{kind}'], f'CHECKPOINT: {files[kind]}', *words)
    assert 'Config' not in runs[f'not_ckpt_{kind}'].stdout, message  # config not printed


@pytest.mark.parametrize('case, what, global_name', [
    ('not_ckpt_runs_code', 'CHECKPOINT', 'posix.system'),
    ('resume_runs_code', '--resume', 'posix.system'),
    ('converter_runs_code', 'SRC', 'posix.system'),
    ('whole_model', 'CHECKPOINT', 'torch.nn.modules.linear.Linear'),  # via torch.load
])
def test_checkpoint_that_runs_code_is_refused(runs, files, case, what, global_name):
    out = runs[case]
    message = _user_error(out, f'{what}: refused to load', f'needs {global_name}',
                          'not loaded')
    log = out.stdout + out.stderr
    assert 'weights_only' not in log and 'pwned' not in log, message
    assert 'Config' not in out.stdout  # failed before the config is printed


def test_unknown_arch(runs):
    # with_cp is not in the config, but MambaOut takes it: accepted, the arch is not
    _user_error(runs['arch'], "model.backbone.arch: unknown MambaOut arch 'tinyy'",
                'valid archs: femto, kobe, tiny, small, base',
                '--cfg-options model.backbone.arch=femto')


@pytest.mark.parametrize('case, words', [
    ('typo_arg', ['--cfg-options model.backbone.drop_path_rat',
                  "MambaOut (model.backbone.type) has no argument 'drop_path_rat'",
                  'Did you mean model.backbone.drop_path_rate']),
    ('removed_key', ['--cfg-options train_speedups', 'it was removed', 'configs/stock/']),
    ('missing_parent', ['--cfg-options model.bakbone.arch', 'the config has no model.bakbone',
                        'Did you mean model.backbone.arch']),
])
def test_cfg_options_key_that_matches_nothing(runs, case, words):
    _user_error(runs[case], *words)


def test_classes_and_heads_disagree(runs):
    _user_error(runs['num_classes'], 'train_dataloader.dataset.metainfo names 6 classes',
                'model.roi_head.bbox_head.num_classes=80, model.roi_head.mask_head.num_classes=80',
                '--cfg-options model.roi_head.bbox_head.num_classes=6 '
                'model.roi_head.mask_head.num_classes=6')


def test_training_an_evaluation_config(runs):
    _user_error(runs['eval_config'], 'configs/vim_t_in1k.py cannot be trained',
                'no train_dataloader, train_cfg, optim_wrapper',
                'python tools/test.py configs/vim_t_in1k.py CHECKPOINT')


def test_runner_top_level_keys_cover_the_runner():
    import inspect

    from mmengine.runner import FlexibleRunner, Runner

    from mmmambaout.utils.cli_base import RUNNER_TOP_LEVEL_KEYS
    for cls in (Runner, FlexibleRunner):
        assert set(inspect.signature(cls.__init__).parameters) - {'self', 'cfg'} <= \
            RUNNER_TOP_LEVEL_KEYS


def test_failing_runs_leave_the_work_dir_alone(runs, files):
    assert _snapshot(files['work_dir']) == files['snapshot']


def test_ctrl_c_prints_where_it_stopped_and_how_to_resume(runs, files):
    out = runs['interrupt']
    log = out.stdout + out.stderr
    assert out.returncode == 130, log[-3000:]
    assert 'Traceback' not in log and 'KeyboardInterrupt' not in log, log[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.startswith('interrupted')]
    assert len(lines) == 1, out.stderr[-3000:]
    work_dir = files['tmp'] / 'interrupted'
    last = (work_dir / 'last_checkpoint').read_text().strip()
    assert 'interrupted after iteration ' in lines[0] and '/1000;' in lines[0]
    assert f'last complete checkpoint: {last};' in lines[0]
    assert lines[0].endswith(f'--work-dir {work_dir} --resume')
    assert f'resume with: python tools/train.py {DEMO} --cfg-options' in lines[0]


# -- the rules themselves, in-process (standard library and mmengine.config only) --------


def test_cfg_options_rule():
    from mmengine.config import Config

    from mmmambaout.utils.cli_base import UserError, check_cfg_options
    cfg = Config(dict(model=dict(type='MambaOut', arch='tiny', init_cfg=None),
                      env_cfg=dict(cudnn_benchmark=False),
                      param_scheduler=[dict(type='LinearLR', end=10)]))
    # existing keys, a Runner key, a new key under a dict without type, a None parent,
    # an index in range, _delete_, and keys below another option: nothing to check
    assert check_cfg_options(cfg, {
        'model.arch': 's', 'randomness': dict(seed=0), 'env_cfg.mp_cfg': {},
        'model.init_cfg.checkpoint': 'x.pth', 'param_scheduler.0.end': 5,
        'model._delete_': True, 'optim_wrapper': {}, 'optim_wrapper.optimizer.lr': 1}) == []
    assert check_cfg_options(cfg, {'randomness.seed': 1}) == []  # a Runner key, not in cfg
    # a new key under a typed dict: checked against the class once registries are loaded
    # (with sub-keys too: the argument is the first new key, `backbone` here)
    assert check_cfg_options(cfg, {'model.with_cp': True}) == [('model.with_cp', 'model')]
    assert check_cfg_options(cfg, {'model.backbone.arch': 't'}) == [('model.backbone.arch',
                                                                      'model')]
    for key, words in [('train_speedups', 'it was removed'),
                       ('modle.arch', 'the config has no key modle'),
                       ('env_cfg.dist.backend', 'the config has no env_cfg.dist'),
                       ('param_scheduler.1.end', "'1' is not an index of it (0 to 0)"),
                       ('model.arch.depth', "model.arch is 'tiny', not a dict")]:
        with pytest.raises(UserError, match='--cfg-options ' + key.replace('.', r'\.')) as err:
            check_cfg_options(cfg, {key: 1})
        assert words in str(err.value), str(err.value)


def test_resume_command():
    from mmmambaout.utils.cli_base import resume_command
    argv = ['configs/x.py', '--resume', 'old.pth', '--work-dir', 'w0', '--cfg-options', 'a=1']
    assert resume_command(argv, 'work_dirs/x', prog='tools/train.py', env={}) == (
        'python tools/train.py configs/x.py --cfg-options a=1 --work-dir work_dirs/x --resume')
    argv = ['configs/x.py', '--launcher', 'pytorch', '--resume']
    assert resume_command(argv, 'w', prog='tools/train.py', env={'LOCAL_WORLD_SIZE': '8'}) == (
        'bash tools/dist_train.sh configs/x.py 8 --work-dir w --resume')


@pytest.mark.parametrize('content, words', [
    (b'version https://git-lfs.github.com/spec/v1\noid sha256:ab\n', 'a Git LFS pointer'),
    (b'\x1f\x8b\x08\x00' + bytes(60), 'a gzip-compressed file'),
    ((1000).to_bytes(8, 'little') + b'{"w": {}}', 'a truncated safetensors file'),
    (b'PK\x05\x06' + bytes(18), 'a zip archive without data.pkl'),
    (b'  <html><body>Sign in</body></html>', 'an HTML page'),
])
def test_describe_non_checkpoint(tmp_path, content, words):
    from mmmambaout.utils.cli_base import describe_non_checkpoint
    path = tmp_path / 'x.pth'
    path.write_bytes(content)
    assert words in describe_non_checkpoint(str(path))[0]


def test_checkpoints_are_not_described_as_something_else(tmp_path):
    from safetensors.torch import save_file

    from mmmambaout.utils.cli_base import describe_non_checkpoint, pickled_globals
    torch.save({'w': torch.ones(2)}, tmp_path / 'new.pth')
    torch.save({'w': torch.ones(2)}, tmp_path / 'old.pth', _use_new_zipfile_serialization=False)
    save_file({'w': torch.ones(2)}, tmp_path / 'w.safetensors')
    for name in ('new.pth', 'old.pth', 'w.safetensors'):
        assert describe_non_checkpoint(str(tmp_path / name)) is None, name
    for name in ('new.pth', 'old.pth'):
        assert all(g.startswith(('torch.', 'collections.')) for g in
                   pickled_globals(str(tmp_path / name))), name


def test_new_argument_with_sub_keys():
    """Rule 3 with sub-keys, against the registries: ``metainfo`` is an argument of
    CocoDataset (through BaseDataset), so its ``classes`` may be set; a misspelt
    argument is refused, naming the class and the closest key."""
    from mmengine.config import Config

    from mmmambaout.utils import cli
    from mmmambaout.utils.cli_base import UserError, check_cfg_options
    cfg = Config.fromfile(os.path.join(ROOT, DET))
    key = 'train_dataloader.dataset.metainfo.classes'
    pending = check_cfg_options(cfg, {key: ('disc', 'ring')})
    assert pending == [(key, 'train_dataloader.dataset')]
    cli.check_new_cfg_keys(cfg, pending)
    bad = check_cfg_options(cfg, {'train_dataloader.dataset.metainfoo.classes': ('disc', )})
    with pytest.raises(UserError, match="(?s)the config has no train_dataloader.dataset.metainfoo"
                                        ", and CocoDataset .*has no argument 'metainfoo'"):
        cli.check_new_cfg_keys(cfg, bad)
