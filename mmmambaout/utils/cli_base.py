"""What the command-line tools do before the heavy imports: user errors, arguments, paths,
reading the config, telling a checkpoint file from something else by its bytes.

Standard library only at import time; ``mmengine.config`` (half a second, no torch) is
imported when a parser is built or a config read. The tools load this module *without*
the package's ``__init__`` (which imports torch, mmcv and OpenMMLab: seconds), so that a
mistyped path is reported at once, and a config's mistakes (``--cfg-options`` keys, a
missing dataset or checkpoint) within the second of ``Config.fromfile``. What needs the
registries or torch (argument names of classes, archs, unpickling) is in
:mod:`mmmambaout.utils.cli` and :mod:`mmmambaout.utils.checkpoint_check`.

User errors: a mistake the user can fix (a wrong path, a file that is not a checkpoint,
an unknown ``--cfg-options`` key, a missing dataset) raises :class:`UserError`, whose
message names the problem and the fix. :func:`run_cli` runs a tool's ``main`` and turns
a ``UserError`` into ONE ``error: <message>`` on stderr and exit status 2, without a
traceback, and Ctrl-C into one line and exit status 130. Anything else is a bug and
keeps its traceback. ``MMMAMBAOUT_DEBUG=1`` or ``--debug`` shows the full traceback of
user errors and Ctrl-C too.
"""
import difflib
import os
import os.path as osp
import shlex
import sys
import warnings
import zipfile

DEBUG_ENV = 'MMMAMBAOUT_DEBUG'
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a Ctrl-C'd command

CHECKPOINT_EXTENSIONS = ('.pth', '.pt', '.bin', '.ckpt', '.safetensors')

_PKG_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
_REPO_DIR = osp.dirname(_PKG_DIR)


class UserError(Exception):
    """A mistake the user can fix; the message says what is wrong and how to fix it.

    :func:`run_cli` prints it as ``error: <message>`` (exit status 2, no traceback).
    """


def debug_requested(argv=None):
    """``--debug`` among the arguments, or ``MMMAMBAOUT_DEBUG`` set to a true value."""
    argv = sys.argv[1:] if argv is None else argv
    env = os.environ.get(DEBUG_ENV, '').strip().lower()
    return '--debug' in argv or env not in ('', '0', 'false', 'no', 'off')


def run_cli(main, argv=None, on_interrupt=None):
    """Run ``main(argv)`` as a command-line tool; return the exit status for ``sys.exit``.

    * :class:`UserError`: ``error: <message>`` on stderr, status 2, no traceback;
    * ``KeyboardInterrupt`` (Ctrl-C): one line on stderr, ``on_interrupt()`` (e.g. where
      training stopped and how to resume) or ``interrupted``, status 130;
    * any other exception is a bug and propagates with its traceback;
    * ``main`` returning an int: that status, anything else: 0.

    With ``--debug`` in ``argv`` or ``MMMAMBAOUT_DEBUG=1``, user errors and Ctrl-C
    propagate too, with their full traceback.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = debug_requested(argv)
    try:
        status = main(argv)
    except UserError as err:
        if debug:
            raise
        sys.stdout.flush()
        print(f'error: {err}', file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if debug:
            raise
        sys.stdout.flush()
        message = 'interrupted'
        if on_interrupt is not None:
            try:
                summary = on_interrupt()  # False: print nothing (e.g. not rank 0)
                message = message if summary is None or summary == '' else summary
            except Exception as err:  # the summary is a courtesy; never a second traceback
                message = f'interrupted ({type(err).__name__} while summarising: {err})'
        if message is not False:
            print(message, file=sys.stderr)
        return EXIT_INTERRUPTED
    return status if isinstance(status, int) and not isinstance(status, bool) else 0


def add_debug_arg(parser):
    parser.add_argument('--debug', action='store_true',
                        help=f'show full tracebacks of user errors (or set {DEBUG_ENV}=1)')


def add_common_args(parser):
    """Arguments shared by ``tools/train.py`` and ``tools/test.py``."""
    from mmengine.config import DictAction  # mmengine.config: no torch
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings in the config, key=value pairs, e.g. '
        'train_dataloader.dataset.data_root=/data/coco/ or key="[a,b]"')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_debug_arg(parser)


# -- paths ------------------------------------------------------------------------------


def display_path(path):
    """``path`` relative to the current directory when it lies below it, else absolute."""
    path = osp.abspath(path)
    rel = osp.relpath(path, os.getcwd())
    return path if rel.startswith(os.pardir) else rel


def config_dirs():
    """The folders holding this project's configs (the checkout's, else the package's)."""
    seen, dirs = set(), []
    for d in (osp.join(_REPO_DIR, 'configs'), osp.join(_PKG_DIR, '.mim', 'configs')):
        real = osp.realpath(d)
        if osp.isdir(d) and real not in seen:
            seen.add(real)
            dirs.append(d)
    return dirs


def available_configs():
    """Every runnable config (not ``_base_``), as :func:`display_path` writes it."""
    found = []
    for root in config_dirs():
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != '_base_' and not d.startswith('.'))
            found += [display_path(osp.join(dirpath, f)) for f in sorted(filenames)
                      if f.endswith('.py')]
    return found


def similar_configs(path, n=3):
    """Configs whose name is closest to ``path`` (difflib), same folder first."""
    configs = available_configs()
    name = osp.basename(path)
    name = name if name.endswith('.py') else name + '.py'
    by_name = {}
    for c in configs:
        by_name.setdefault(osp.basename(c), []).append(c)
    close = difflib.get_close_matches(name, list(by_name), n=n, cutoff=0.6)
    want_dir = osp.normpath(osp.dirname(path))
    matches = []
    for c_name in close:  # best name first; within a name, the folder that was typed first
        matches += sorted(by_name[c_name], key=lambda c: osp.normpath(osp.dirname(c)) != want_dir)
    if not matches:  # e.g. a mistyped folder: compare whole paths
        matches = difflib.get_close_matches(display_path(path), configs, n=n, cutoff=0.8)
    return matches[:n]


def check_config_path(path):
    """Raise :class:`UserError` unless ``path`` is a file; suggest the closest configs."""
    if osp.isfile(path):
        return
    what = 'is a folder, not a config file' if osp.isdir(path) else 'not found'
    close = similar_configs(path)
    if close:
        hint = f'Did you mean {close[0]}?'
        if len(close) > 1:
            hint += f' (also close: {", ".join(close[1:])})'
    else:
        dirs = ', '.join(display_path(d) + '/' for d in config_dirs()) or 'configs/'
        hint = f'Give the path of a config file; this project\'s configs are in {dirs}'
    raise UserError(f'config file {what}: {path}. {hint}')


def _similar_files(path, extensions, n=3):
    folder = osp.dirname(path) or '.'
    if not osp.isdir(folder):
        return None
    names = [f for f in os.listdir(folder)
             if f.endswith(extensions) and osp.isfile(osp.join(folder, f))]
    close = difflib.get_close_matches(osp.basename(path), names, n=n, cutoff=0.6)
    return [osp.join(osp.dirname(path), c) for c in close]


def check_checkpoint_path(path, what, fix=''):
    """Raise :class:`UserError` if the checkpoint ``path`` is missing or is not a
    checkpoint (told from its first bytes, see :func:`describe_non_checkpoint`).

    Args:
        what (str): where the path comes from, as the user wrote it (``'CHECKPOINT'``,
            ``'--resume'``, ``'load_from'``, ``'model.backbone.init_cfg.checkpoint'``).
        fix (str): the sentence that says how to give a good one.
    """
    path = os.fspath(path)
    if not osp.isfile(osp.expanduser(path)):
        close = _similar_files(osp.expanduser(path), CHECKPOINT_EXTENSIONS)
        if osp.isdir(path):
            problem = f'{path} is a folder, not a checkpoint file'
        elif close is None:
            problem = (f'checkpoint not found: {path} (the folder '
                       f'{osp.dirname(path) or "."} does not exist either)')
        else:
            problem = f'checkpoint not found: {path}'
        hint = f' Did you mean {", ".join(close)}?' if close else ''
        raise UserError(f'{what}: {problem}.{hint} {fix}'.rstrip())
    described = describe_non_checkpoint(osp.expanduser(path))
    if described is not None:
        desc, remedy = described
        raise UserError(f'{what}: {path} is not a checkpoint: it is {desc}. {remedy or fix}'
                        .rstrip())
    for name in pickled_globals(osp.expanduser(path)) or ():
        if name.split('.')[0] not in MAYBE_ALLOWED_GLOBAL_PACKAGES:
            raise UserError(refusal_message(path, what, name))


# The packages whose globals a checkpoint may legitimately pickle (torch's own allow-list:
# torch, builtins (__builtin__ in protocol 2), collections, _codecs; mmengine's
# checkpoints: numpy, mmengine; Vim's: argparse). A global from any other package is
# refused at once, from the bytes; the others are left to torch.load(weights_only=True)
# and its exact allow-list.
MAYBE_ALLOWED_GLOBAL_PACKAGES = frozenset(('torch', 'builtins', '__builtin__', 'collections',
                                           '_codecs', 'numpy', 'mmengine', 'argparse'))


def refusal_message(path, what, name=None):
    """Why a checkpoint that needs ``name`` (a global) to be unpickled is not loaded.
    It never suggests loading it unsafely."""
    needs = (f'unpickling it needs {name}, which is code (a class or function), not '
             'tensor data' if name else
             'unpickling it needs objects that are not tensors or plain containers')
    return (f'{what}: refused to load {path}: {needs}. A checkpoint that runs code when it '
            'is loaded can do anything your user account can, so it is not loaded. Use a plain '
            'weights file from a source you trust: a state dict of tensors '
            '(torch.save(model.state_dict(), path)) or a .safetensors file.')


_STRING_OPS = frozenset(('SHORT_BINUNICODE', 'BINUNICODE', 'BINUNICODE8', 'UNICODE',
                         'SHORT_BINSTRING', 'BINSTRING', 'STRING'))


def pickled_globals(path):
    """The globals (``module.name``) that unpickling the checkpoint ``path`` would look
    up, read from its pickle opcodes without unpickling anything; None when that cannot
    be told (not a pickle, an unusual opcode stream)."""
    import pickletools
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist()
                            if n == 'data.pkl' or n.endswith('/data.pkl'))
                with archive.open(name) as f:
                    return _globals_of_pickles(f, 1, pickletools)
        with open(path, 'rb') as f:  # torch's legacy format: magic, protocol, info, object
            return _globals_of_pickles(f, 4, pickletools)
    except (OSError, StopIteration, zipfile.BadZipFile):
        return None


def _globals_of_pickles(f, count, pickletools):
    found = []
    for i in range(count):
        pushes, memo = [], {}
        try:
            for op, arg, _ in pickletools.genops(f):
                name = op.name
                if name in ('GLOBAL', 'INST'):
                    found.append(arg.replace(' ', '.'))
                elif name == 'STACK_GLOBAL':
                    if len(pushes) < 2 or not all(isinstance(v, str) for v in pushes[-2:]):
                        return None
                    found.append(f'{pushes[-2]}.{pushes[-1]}')
                if name in _STRING_OPS:
                    pushes.append(arg)
                elif name in ('PUT', 'BINPUT', 'LONG_BINPUT'):
                    memo[arg] = pushes[-1] if pushes else None
                elif name == 'MEMOIZE':
                    memo[len(memo)] = pushes[-1] if pushes else None
                elif name in ('GET', 'BINGET', 'LONG_BINGET'):
                    pushes.append(memo.get(arg))
                else:
                    pushes.append(None)
                if name == 'STOP':
                    break
        except Exception:  # not (or no longer) a pickle: what was read so far stands
            return found if i else None
    return found


_CUT_OFF = 'It was probably cut off while being downloaded or copied: fetch or copy it again.'


def describe_non_checkpoint(path):
    """``None`` if the bytes of ``path`` look like a checkpoint: a complete zip archive
    with a ``data.pkl`` (``torch.save``), a pickle (older ``torch.save``), or a
    safetensors file. Otherwise ``(what it is, how to fix it or None)``, e.g.
    ``('an empty file (0 bytes)', 'It was probably cut off ...')``.

    Only reads the first kilobytes and, for zip archives, the table of contents."""
    size = os.path.getsize(path)
    if size == 0:
        return 'an empty file (0 bytes)', _CUT_OFF
    with open(path, 'rb') as f:
        head = f.read(4096)
    if head[:4] in (b'PK\x03\x04', b'PK\x05\x06'):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            return (f'a truncated or damaged zip archive ({size} bytes; the table of '
                    'contents at its end is missing)', _CUT_OFF)
        if not any(n == 'data.pkl' or n.endswith('/data.pkl') for n in names):
            shown = ', '.join(names[:5]) + (', ...' if len(names) > 5 else '')
            return (f'a zip archive without data.pkl, so not written by torch.save '
                    f'(it holds: {shown or "nothing"})', None)
        return None
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle PROTO opcode
        return None
    if size >= 10 and head[8:9] == b'{':  # safetensors: u64 header length, JSON header
        header_len = int.from_bytes(head[:8], 'little')
        if 8 + header_len > size:
            return (f'a truncated safetensors file ({size} bytes, its header alone claims '
                    f'{header_len})', _CUT_OFF)
        return None
    if head[:2] == b'\x1f\x8b':
        return 'a gzip-compressed file', 'Decompress it first (gunzip), then pass the result.'
    text = _as_text(head)
    if text is not None:
        stripped = text.lstrip('\ufeff \t\r\n')
        lower = stripped.lower()
        if lower.startswith(('<!doctype html', '<html')) or '<html' in lower[:512]:
            return ('an HTML page', 'A download probably saved an error or '
                    'login page instead of the file: download the checkpoint again (e.g. '
                    '`python tools/download_checkpoint.py NAME_OR_URL`).')
        if stripped.startswith('version https://git-lfs'):
            return ('a Git LFS pointer, not the file itself',
                    'Fetch the real file (`git lfs pull`), or download it again.')
        first = stripped.splitlines()[0] if stripped else ''
        first = first if len(first) <= 60 else first[:57] + '...'
        return f'a text file ({size} bytes, starting with {first!r})', None
    return (f'neither a zip archive (what torch.save writes), a pickle nor a safetensors '
            f'file (it starts with the bytes {head[:8].hex(" ")})', None)


def _as_text(head):
    if b'\x00' in head:
        return None
    for cut in range(4):  # the sample may end inside a multi-byte character
        try:
            text = head[:len(head) - cut].decode('utf-8')
            break
        except UnicodeDecodeError:
            continue
    else:
        return None
    printable = sum(c.isprintable() or c in '\t\r\n' for c in text)
    return text if printable >= 0.95 * len(text) else None


# -- Ctrl-C -----------------------------------------------------------------------------


def last_checkpoint(work_dir):
    """The checkpoint ``<work_dir>/last_checkpoint`` names, if that file and it exist.

    mmengine writes ``last_checkpoint`` after the checkpoint itself is complete, so it
    never names a half-written one."""
    try:
        with open(osp.join(work_dir, 'last_checkpoint')) as f:
            path = f.read().strip()
    except OSError:
        return None
    return path if path and osp.isfile(path) else None


def resume_command(argv, work_dir, prog=None, env=None):
    """The command that resumes an interrupted ``tools/train.py`` run: the same
    arguments, with ``--work-dir work_dir --resume`` (any earlier ``--resume`` value and
    ``--work-dir`` dropped). A ``torchrun`` run (``--launcher pytorch``) is resumed
    through ``tools/dist_train.sh`` with the same number of processes."""
    env = os.environ if env is None else env
    prog = prog or sys.argv[0]
    args, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in ('--resume', '--work-dir'):
            takes_value = i + 1 < len(argv) and not argv[i + 1].startswith('-')
            # `--resume` takes a value only if it is a checkpoint, not the config
            if arg == '--resume' and takes_value and argv[i + 1].endswith('.py'):
                takes_value = False
            i += 2 if takes_value else 1
            continue
        if arg.startswith(('--resume=', '--work-dir=')):
            i += 1
            continue
        args.append(arg)
        i += 1
    prog_dir = osp.dirname(prog)
    if 'pytorch' in args and env.get('LOCAL_WORLD_SIZE'):
        j = args.index('pytorch')
        if j > 0 and args[j - 1] == '--launcher':
            del args[j - 1:j + 1]
        config, rest = (args[0], args[1:]) if args else ('CONFIG', [])
        cmd = ['bash', osp.join(prog_dir, 'dist_train.sh'), config, env['LOCAL_WORLD_SIZE'],
               *rest]
    else:
        cmd = ['python', prog, *args]
    return shlex.join(cmd + ['--work-dir', work_dir, '--resume'])


def training_interrupted_message(progress, work_dir, command):
    """One line: where training stopped, the last complete checkpoint, how to resume."""
    ckpt = last_checkpoint(work_dir) if work_dir else None
    saved = (f'last complete checkpoint: {display_path(ckpt)}' if ckpt else
             f'no checkpoint saved yet in {display_path(work_dir)}' if work_dir else
             'no checkpoint saved yet')
    return f'interrupted {progress}; {saved}; resume with: {command}'


# -- light modules ----------------------------------------------------------------------


def light_module(name):
    """Import ``name`` (a module of this package that needs only the standard library,
    mmengine.config, yaml and this module, e.g. ``mmmambaout.utils.dataset_check`` or
    ``mmmambaout.zoo``) without running the package's ``__init__``
    (:func:`mmmambaout_mmcv_finder.load_submodule`)."""
    from mmmambaout_mmcv_finder import load_submodule
    return load_submodule(name)


# -- the config -------------------------------------------------------------------------

SUPPORTED_SCOPES = ('mmdet', 'mmseg', 'mmpretrain')

# Top-level keys that mean something to mmengine 0.10.7's Runner (its __init__ and
# FlexibleRunner's arguments, and what Runner.from_cfg / wrap_model / train read from the
# config), and to our tools. A test keeps it a superset of Runner.__init__'s arguments.
RUNNER_TOP_LEVEL_KEYS = frozenset((
    'model', 'work_dir', 'train_dataloader', 'val_dataloader', 'test_dataloader', 'train_cfg',
    'val_cfg', 'test_cfg', 'auto_scale_lr', 'optim_wrapper', 'param_scheduler',
    'val_evaluator', 'test_evaluator', 'default_hooks', 'custom_hooks', 'data_preprocessor',
    'load_from', 'resume', 'launcher', 'env_cfg', 'log_processor', 'log_level', 'visualizer',
    'default_scope', 'randomness', 'experiment_name', 'compile', 'strategy', 'runner_type',
    'model_wrapper_cfg', 'find_unused_parameters', 'sync_bn', 'efficient_conv_bn_eval',
    'activation_checkpointing', 'custom_imports', 'tta_model', 'tta_pipeline'))
# top-level keys this project's configs had and no longer have: what to do instead
REMOVED_KEYS = {
    'train_speedups': 'it was removed: each config now names the speed components it uses '
                      '(e.g. MambaOutCompileHook in custom_hooks; see the [speed] comments '
                      'in configs/*.py), and configs/stock/ has the same models without them',
}


def load_config(args):
    """Read ``args.config`` and apply ``args.cfg_options``, importing neither torch nor
    OpenMMLab's models: ``custom_imports`` are not run here, and the argument names of
    new keys are checked later (``cli.load_config`` does both). Sets
    ``args.new_cfg_keys`` (see :func:`check_cfg_options`)."""
    from mmengine.config import Config
    check_config_path(args.config)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    with warnings.catch_warnings():
        # mmengine reloads pkg_resources for each mmdet:: / mmseg:: base of a config, and
        # each reload warns that pkg_resources is deprecated: about mmengine, not the user
        warnings.filterwarnings('ignore', 'pkg_resources is deprecated', UserWarning)
        cfg = Config.fromfile(args.config, import_custom_modules=False)
    cfg.launcher = args.launcher
    args.new_cfg_keys = []
    if args.cfg_options is not None:
        args.new_cfg_keys = check_cfg_options(cfg, args.cfg_options)
        cfg.merge_from_dict(args.cfg_options)
    scope = cfg.get('default_scope')
    if scope not in SUPPORTED_SCOPES:
        raise UserError(f'{args.config}: default_scope must be one of {SUPPORTED_SCOPES}, '
                        f'got {scope!r}: the tools run mmdet, mmseg and mmpretrain configs')
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def check_cfg_options(cfg, options):
    """Raise :class:`UserError` for a ``--cfg-options`` key that would set nothing real.

    mmengine's ``merge_from_dict`` creates whatever key it is given, so a typo
    (``model.backbone.drop_path_rat=0.1``) or a removed setting (``train_speedups=False``)
    would run something other than what was asked, without a word. Yet setting a key
    that the config does not list is legitimate when the class it configures takes that
    argument (``model.backbone.with_cp=True``: the default lives in the class signature).
    The rule:

    1. every parent of the key must exist in the config: a dict key, or an index in
       range of a list (a parent that is ``None`` may become a new dict);
    2. a new top-level key must be one that mmengine's Runner reads
       (:data:`RUNNER_TOP_LEVEL_KEYS`), and may then be set with its sub-keys
       (``randomness.seed=1`` where the config has no ``randomness``);
    3. a new key under a dict whose ``type`` is a class registered in the config's
       scope must be an argument of that class, and may then be set with its sub-keys
       (``train_dataloader.dataset.metainfo.classes=...``: ``metainfo`` is the
       argument). That needs the registries, so it is returned as ``[(key, parent key
       path)]`` for ``cli.check_new_cfg_keys``; a new last key under a dict
       without ``type`` (``env_cfg``, ``model.train_cfg.rcnn``) is accepted;
    4. keys containing ``_delete_``, and keys below another key of the same
       ``--cfg-options``, are not checked.

    The message names the key and the closest existing keys (difflib over the config's
    key paths and, for a class, its arguments).
    """
    keys, pending = list(options), []
    for key in keys:
        if '_delete_' in key.split('.'):
            continue
        if any(key.startswith(other + '.') for other in keys if other != key):
            continue
        new = _check_cfg_option(cfg, key)
        if new:
            pending.append(new)
    return pending


def _check_cfg_option(cfg, key):
    parts = key.split('.')
    if parts[0] not in cfg:
        if parts[0] in RUNNER_TOP_LEVEL_KEYS:
            return None  # a Runner setting the config leaves at its default (randomness.seed)
        what = (f'the config has no key {parts[0]}' if len(parts) > 1 else
                f'{parts[0]} is not a key of the config, nor a setting that mmengine\'s '
                'Runner reads')
        raise UserError(unknown_key_message(key, what, REMOVED_KEYS.get(parts[0]),
                                            config_keys(cfg) + list(RUNNER_TOP_LEVEL_KEYS)))
    node, path = cfg[parts[0]], [parts[0]]
    for i, part in enumerate(parts[1:], 1):
        here = '.'.join(path)
        if isinstance(node, (list, tuple)):
            if not (part.isdigit() and int(part) < len(node)):
                raise UserError(unknown_key_message(
                    key, f'{here} is a list of {len(node)} items, and {part!r} is not an '
                    f'index of it (0 to {len(node) - 1})', None, config_keys(cfg)))
            node, path = node[int(part)], path + [part]
            continue
        if node is None:
            return None  # None becomes a new dict: nothing to check against
        if not isinstance(node, dict):
            raise UserError(unknown_key_message(
                key, f'{here} is {node!r}, not a dict, so it has no key {part!r}', None,
                config_keys(cfg)))
        if part in node:
            node, path = node[part], path + [part]
            continue
        if 'type' in node:   # the class's argument `part`, checked with the registries
            return key, here
        if i != len(parts) - 1:
            raise UserError(unknown_key_message(
                key, f'the config has no {here}.{part} ({here} has: '
                f'{", ".join(map(str, node))})', None, config_keys(cfg)))
        return None
    return None


def unknown_key_message(key, what, why, candidates):
    candidates = [c for c in dict.fromkeys(candidates) if c != key]
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    hint = f' Did you mean {", ".join(close)}?' if close else ''
    why = f' ({why})' if why else ''
    return (f'--cfg-options {key}: {what}{why}.{hint} Fix the key, or set new settings in '
            'a config file that inherits this one (_base_ = [...]).')


def get_key_path(cfg, path):
    """The value at a dotted key path (list items by index); None when there is none."""
    node = cfg
    for part in path.split('.'):
        if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif not isinstance(node, (list, tuple)) and part in node:
            node = node[part]
        else:
            return None
    return node


def config_keys(cfg):
    """Every key path of the config, e.g. ``model.backbone.arch``, ``param_scheduler.0.end``."""
    found = []

    def walk(node, prefix):
        items = (node.items() if isinstance(node, dict) else
                 enumerate(node) if isinstance(node, (list, tuple)) else ())
        for k, v in items:
            found.append(f'{prefix}{k}')
            walk(v, f'{prefix}{k}.')

    walk({k: cfg[k] for k in cfg.keys()}, '')
    return found


def config_nodes(node, path):
    """(key path, dict) for the dict ``node`` and every dict below it."""
    if isinstance(node, dict):
        yield path, node
        items = node.items()
    elif isinstance(node, (list, tuple)):
        items = enumerate(node)
    else:
        return
    for key, child in items:
        yield from config_nodes(child, f'{path}.{key}')


def pretrained_init_cfgs(cfg):
    """(init_cfg key path, the dict it belongs to, the init_cfg) of every
    ``init_cfg=dict(type='Pretrained', checkpoint=...)`` under ``cfg.model``."""
    for path, node in config_nodes(cfg.get('model'), 'model'):
        init_cfg = node.get('init_cfg')
        many = isinstance(init_cfg, (list, tuple))
        for i, init in enumerate(init_cfg if many else [init_cfg]):
            if (isinstance(init, dict) and init.get('type') == 'Pretrained'
                    and init.get('checkpoint')):
                yield f'{path}.init_cfg' + (f'.{i}' if many else ''), node, init


def check_config_checkpoints(cfg, load_from_what='load_from', init_cfgs=True):
    """Raise :class:`UserError` if a checkpoint file the run will read is missing or is
    not a checkpoint (by its bytes): ``cfg.load_from`` (named ``load_from_what`` in the
    message: ``CHECKPOINT``, ``--resume``; None: not checked) and, with ``init_cfgs``, the
    ``checkpoint`` of
    every ``Pretrained`` init_cfg under ``cfg.model``. URLs are left to the download; a
    bare name must be in the model zoo. ``cli.check_checkpoints`` then loads them."""
    load_from = cfg.get('load_from') if load_from_what else None
    if load_from and '://' not in str(load_from):
        check_checkpoint_path(str(load_from), load_from_what, LOAD_FROM_FIXES.get(
            load_from_what, 'Fix it with --cfg-options load_from=PATH, or load_from=None '
            'to start from the initial weights.'))
    if not init_cfgs:
        return
    for key, _, init in pretrained_init_cfgs(cfg):
        spec, what = str(init['checkpoint']), f'{key}.checkpoint'
        fix = (f'Fix it with --cfg-options {what}=PATH (a file, an http(s) URL or a model '
               f'zoo name: python tools/download_checkpoint.py --list), or {key}=None to '
               'train from scratch.')
        if '://' in spec:
            continue  # downloaded (and checked) when the weights are initialised
        looks_like_path = os.sep in spec or spec.endswith(CHECKPOINT_EXTENSIONS)
        if osp.isfile(osp.expanduser(spec)) or looks_like_path:
            check_checkpoint_path(spec, what, fix)
            continue
        try:
            index = light_module('mmmambaout.zoo').load_model_index()
        except (OSError, ImportError, ValueError):
            continue
        if spec not in index:
            close = difflib.get_close_matches(spec, list(index), n=3, cutoff=0.6)
            hint = f' Did you mean {", ".join(close)}?' if close else ''
            raise UserError(f'{what}: {spec!r} is neither a file, a URL nor a model zoo '
                            f'name.{hint} {fix}')
        if not index[spec].weights:
            raise UserError(f'{what}: model zoo entry {spec!r} has no released weights. '
                            f'{fix}')


LOAD_FROM_FIXES = {
    'CHECKPOINT': 'Give a checkpoint that training wrote (e.g. work_dirs/<config name>/'
                  'epoch_12.pth) or a released one (python tools/download_checkpoint.py '
                  '--list).',
    '--resume': 'Give a checkpoint of this run, or --resume without a value to resume from '
                'the latest checkpoint in the work dir.',
}
