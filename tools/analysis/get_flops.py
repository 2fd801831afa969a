#!/usr/bin/env python
"""MACs and parameters of a detector, segmentor or classifier built from a config, for the
whole model and per part (backbone, neck, heads), at one fixed input size.

Like mmdet's and mmseg's ``tools/analysis_tools/get_flops.py``: mmengine's jit-trace
counter (``mmengine.analysis.FlopAnalyzer``, fvcore's), one random image at ``--shape``
through the config's data preprocessor and the model's inference forward (mode
``'tensor'``; a two-stage detector's RoI heads run on the RPN's proposals, mmdet caps
the mask head at 100). Defaults are the papers' sizes: 800x1280 for mmdet configs
(COCO), 512x2048 for mmseg (ADE20K), 224x224 for mmpretrain (ImageNet). Examples::

    python tools/analysis/get_flops.py configs/mask_rcnn_mambaout_t_1x_coco.py
    python tools/analysis/get_flops.py configs/upernet_mambaout_t_160k_ade20k.py
    python tools/analysis/get_flops.py configs/mambaout_t_in1k.py --shape 384

What counts (fvcore's convention, which the paper's numbers follow: it reproduces every
MambaOut MAC figure of the paper to within 0.5%, ImageNet, COCO and ADE20K, but femto's,
printed as 1.2G for 1.156G): one multiply-add is one MAC; conv (the 7x7 depthwise one
included), linear and matmul count, norms and upsampling as mmengine's handles count
them; elementwise ops (GELU, the gating product, residual adds), pooling, RoIAlign and
NMS count nothing. The ops that no handle counted are listed after the table.
Our own ops appear in the trace as one ``prim::PythonOp`` node each, and get handles:
MambaOut's fused token mixer (CUDA) counts what its composite ops count, and the
selective scan of Vim counts as Mamba's papers count it (see the handles below).
Parameters are all of the model's, as the papers report them (a segmentor's auxiliary
head included, although only training runs it).
"""
import argparse
import contextlib
import importlib
import os.path as osp
import platform
import shlex
import sys
from collections import Counter
from functools import partial

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

DEFAULT_SHAPES = {'mmdet': (800, 1280), 'mmseg': (512, 2048), 'mmpretrain': (224, 224)}

# The autograd.Functions behind our ops, (module, class): jit tracing records a call as one
# node of kind 'prim::PythonOp.<class>'.
FUSED_MIXER_FUNCTIONS = (('mmmambaout.ops.gated_conv_mixer', '_GatedConvMixer'), )
SELECTIVE_SCAN_FUNCTIONS = (
    ('mmmambaout.ops.selective_scan.reference', '_SelectiveScanFunction'),
    ('mmmambaout.ops.selective_scan.triton', '_SelectiveScanTriton'),
    ('mamba_ssm.ops.selective_scan_interface', 'SelectiveScanFn'),
)


class _Parser(argparse.ArgumentParser):

    def error(self, message):  # one line, no usage block
        self.exit(2, f'{self.prog}: error: {message}\n')


class _CfgOptions(DictAction):

    def __call__(self, parser, namespace, values, option_string=None):
        bad = [v for v in values if '=' not in v]
        if bad:  # DictAction would raise a bare ValueError
            parser.error(f'{option_string} takes key=value pairs, got {bad[0]!r}')
        super().__call__(parser, namespace, values, option_string)


def parse_args(argv=None):
    p = _Parser(prog='get_flops.py', description='MACs and parameters of a model, per part')
    p.add_argument('config', help='config file path')
    p.add_argument('--shape', type=int, nargs='+', metavar='N',
                   help='input H W (or one size for a square); default: the paper size '
                   'of the config\'s task (mmdet 800 1280, mmseg 512 2048, mmpretrain 224)')
    p.add_argument('--cfg-options', nargs='+', action=_CfgOptions,
                   help='override settings in the config, key=value pairs')
    args = p.parse_args(argv)
    if args.shape is not None:
        if len(args.shape) not in (1, 2) or min(args.shape) < 1:
            p.error(f'--shape takes H W or one positive size, got {args.shape}')
        args.shape = tuple(args.shape) * (3 - len(args.shape))
    return args


# -- handles -----------------------------------------------------------------------------
def _shape(value):
    return value.type().sizes() if value.isCompleteTensor() else None


def fused_mixer_macs(inputs, outputs):
    """``_GatedConvMixer(y, conv weight, conv bias)``: its depthwise k x k conv, B*H*W*C*k*k,
    what ``aten::_convolution`` counts for the composite path. The GELU gate and the
    product are elementwise: neither fvcore nor the paper counts them (in the composite
    path they are unhandled ``aten::gelu`` / ``aten::mul``), so neither do we."""
    b, h, w, _ = _shape(inputs[0])
    c, _, kh, kw = _shape(inputs[1])
    return b * h * w * c * kh * kw


def _call_args(inputs):
    """The positional arguments of the ``autograd.Function`` call behind a PythonOp node:
    its traced tensors in order, constants (``None`` for an absent optional tensor) where
    the node's calling convention has a ``'c'``."""
    ids = [v.unique() for v in inputs]
    node = next(u.user for u in inputs[0].uses()
                if [v.unique() for v in u.user.inputs()] == ids)
    tensors, consts = iter(inputs), iter(node.scalar_args())
    return [next(tensors) if c == 'd' else next(consts) for c in node.cconv()]


def selective_scan_macs(inputs, outputs):
    """``(u, delta, A, B, C, D, z, delta_bias, ...)`` with u ``(batch, dim, L)``, A
    ``(dim, N)``: 9 * batch * L * dim * N, the count Albert Gu gives for the scan
    (discretisation, the parallel scan's ~2L combine steps, the C contraction;
    state-spaces/mamba#110, stated there in flops), plus batch * dim * L each for the D skip
    and the z gate when given. That is VMamba's fvcore handle (``flops_selective_scan_fn``):
    it adds these numbers to fvcore's totals as they are, as MACs, and VMamba's MACs in the
    MambaOut paper's tables were counted so; we count alike, so that Vim's numbers compare
    with those. Read as flops, as #110 states them, the term is up to 2x high as MACs
    (it is ~18% of Vim-S at 224)."""
    u, _, a, _, _, d, z = _call_args(inputs)[:7]
    batch, dim, length = _shape(u)
    return (9 * batch * length * dim * _shape(a)[1] +
            batch * dim * length * ((d is not None) + (z is not None)))


def flop_analyzer(model, inputs):
    """mmengine's FlopAnalyzer with our handles and its warnings off (the ops it could not
    count are reported from ``unsupported_ops()`` instead)."""
    from mmengine.analysis import FlopAnalyzer
    fa = FlopAnalyzer(model, inputs)
    for functions, handle in ((FUSED_MIXER_FUNCTIONS, fused_mixer_macs),
                              (SELECTIVE_SCAN_FUNCTIONS, selective_scan_macs)):
        for _, name in functions:
            fa.set_op_handle(f'prim::PythonOp.{name}', handle)
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    fa.tracer_warnings('none')
    return fa


def trace_count(model, inputs):
    """:func:`flop_analyzer` on ``model(*inputs)``, traced now: without grad, with our
    ops' internals untraced. The analyzer keeps the counts."""
    fa = flop_analyzer(model, inputs)
    with torch.no_grad(), untraced_internals():
        fa.total()
    return fa


@contextlib.contextmanager
def untraced_internals():
    """Run our autograd.Functions' forwards with the jit tracer paused. It would record
    every op inside them into their node's subgraph, which no handle reads: for the
    chunked reference scan, each step of the recurrence (Vim-S at 800x1280: ~15 GB and
    most of the time). Functions whose module does not import (no Triton, no mamba_ssm)
    cannot be called either."""
    saved = []
    for module, name in FUSED_MIXER_FUNCTIONS + SELECTIVE_SCAN_FUNCTIONS:
        try:
            cls = getattr(importlib.import_module(module), name)
        except Exception:
            continue
        saved.append((cls, cls.__dict__['forward']))

    def untraced(forward):
        def run(*args, **kwargs):
            state = torch._C._get_tracing_state()
            torch._C._set_tracing_state(None)
            try:
                return forward(*args, **kwargs)
            finally:
                torch._C._set_tracing_state(state)
        return staticmethod(run)

    try:
        for cls, forward in saved:
            cls.forward = untraced(forward.__func__)
        yield
    finally:
        for cls, forward in saved:
            cls.forward = forward


# -- model and input -----------------------------------------------------------------------
def load_config(path, cfg_options=None):
    if not osp.isfile(path):  # before the slow imports
        raise FileNotFoundError(f'config file not found: {path}')
    import mmmambaout  # noqa: F401  (mmcv op backend before any mmdet / mmseg import)
    from mmengine.config import Config

    from mmmambaout.utils.cli import SUPPORTED_SCOPES, disable_pretrained
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('default_scope') not in SUPPORTED_SCOPES:
        raise ValueError(f'default_scope must be one of {SUPPORTED_SCOPES}, got '
                         f'{cfg.get("default_scope")!r}')
    if not isinstance(cfg.get('model'), dict):
        raise ValueError('the config defines no model')
    disable_pretrained(cfg.model)  # nothing to download: the weights do not change counts
    return cfg


def build_model(cfg, device='cpu'):
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope

    from mmmambaout.models.backbones.mambaout import MambaOut
    from mmmambaout.models.heads import BatchedRPNHead
    init_default_scope(cfg.default_scope)
    registry = importlib.import_module(f'{cfg.default_scope}.registry')
    model = revert_sync_batchnorm(registry.MODELS.build(cfg.model)).to(device).eval()
    for m in model.modules():
        # compiled stages are opaque to jit tracing; eager blocks compute the same
        if isinstance(m, MambaOut) and m.compile_stages:
            m.compile_blocks(False)
        # the RPN convolutions of each level, not the packed canvas (same outputs, but its
        # zero padding would add MACs, and the packing does not trace)
        if isinstance(m, BatchedRPNHead):
            m.pack_levels = False
    return model


def make_inputs(model, scope, shape):
    """One random image ``shape`` (H, W) through the model's data preprocessor, with the
    data sample that the scope's inference forward reads. Returns (inputs, data_samples)."""
    h, w = shape
    img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    meta = dict(ori_shape=(h, w), img_shape=(h, w))
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        samples = [DetDataSample(metainfo=dict(meta, scale_factor=(1., 1.)))]
    elif scope == 'mmseg':
        from mmseg.structures import SegDataSample
        samples = [SegDataSample(metainfo=dict(meta, pad_shape=(h, w)))]
    else:
        samples = None
    data = model.data_preprocessor(dict(inputs=[img], data_samples=samples), False)
    return data['inputs'], data['data_samples']


def analyze(model, inputs, data_samples=None):
    """Count ``model``'s inference forward on ``inputs``. Returns a dict: ``macs``,
    ``params`` (totals), ``parts`` ({top-level child: (MACs, params)}), ``unsupported``
    (Counter of ops no handle counted), ``rois`` ({RoI extractor: RoIs it pooled})."""
    from mmengine.analysis import parameter_count
    rois, hooks = {}, []
    for name, m in model.named_modules():
        if name.endswith('roi_extractor'):  # how many proposals the RoI heads ran on
            hooks.append(m.register_forward_pre_hook(
                lambda mod, args, name=name: rois.__setitem__(name, int(args[1].shape[0]))))
    forward = model.forward
    model.forward = partial(forward, data_samples=data_samples, mode='tensor')
    try:
        fa = trace_count(model, (inputs, ))
    finally:
        model.forward = forward  # an instance attribute shadowing the class's method
        for h in hooks:
            h.remove()
    by_module, params = fa.by_module(), parameter_count(model)
    parts = {name: (by_module.get(name, 0), params.get(name, 0))
             for name, _ in model.named_children()}
    parts = {k: v for k, v in parts.items() if any(v)}
    return dict(macs=fa.total(), params=params[''], parts=parts,
                unsupported=Counter(fa.unsupported_ops()), rois=rois)


# -- report ----------------------------------------------------------------------------
def report(result, shape, padded_shape):
    rows = [(name, f'{macs / 1e9:.3f}', f'{p / 1e6:.2f}',
             '' if macs else 'not run by the inference forward')
            for name, (macs, p) in result['parts'].items()]
    rows.append(('total', f'{result["macs"] / 1e9:.3f}', f'{result["params"] / 1e6:.2f}', ''))
    width = max(len(r[0]) for r in rows)
    line = f'input shape: {shape[0]}x{shape[1]} (H x W, batch 1)'
    if tuple(padded_shape) != tuple(shape):
        line += f', padded by the data preprocessor to {padded_shape[0]}x{padded_shape[1]}'
    print(line)
    print(f'{"part":{width}s} {"GMACs":>9s} {"params(M)":>10s}')
    for name, macs, p, note in rows:
        print(f'{name:{width}s} {macs:>9s} {p:>10s}  {note}'.rstrip())
    if result['rois']:
        print('RoIs pooled: ' + ', '.join(f'{k} {v}' for k, v in result['rois'].items()))
    if result['unsupported']:
        ops = ', '.join(f'{k} x{v}' for k, v in result['unsupported'].most_common())
        print(f'no MACs counted (no handle) for: {ops}')


def fail(message):
    print(f'get_flops.py: error: {message}', file=sys.stderr)
    sys.exit(2)


def main(argv=None):
    args = parse_args(argv)
    print('command:', shlex.join([sys.executable] + (sys.argv if argv is None else
                                                     [__file__] + list(argv))))
    try:
        cfg = load_config(args.config, args.cfg_options)
    except FileNotFoundError as e:
        fail(str(e))
    except ValueError as e:
        fail(f'{args.config}: {e}')
    except Exception as e:  # syntax, a bad override...: one line, no traceback
        fail(f'{args.config}: {type(e).__name__}: {e}')
    import mmengine

    import mmmambaout
    scope = cfg.default_scope
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    print(f'torch {torch.__version__}, mmengine {mmengine.__version__}, {scope} '
          f'{importlib.import_module(scope).__version__}, mmmambaout {mmmambaout.__version__}, '
          f'python {platform.python_version()}, device {device}')
    shape = args.shape or DEFAULT_SHAPES[scope]
    torch.manual_seed(0)  # a detector's proposals depend on the image and the weights
    try:
        model = build_model(cfg, device)
        inputs, samples = make_inputs(model, scope, shape)
        result = analyze(model, inputs, samples)
    except Exception as e:
        fail(f'{args.config}: {type(e).__name__}: {e}')
    print(f'config: {args.config} ({type(model).__name__}, {scope})')
    report(result, shape, inputs.shape[-2:])


if __name__ == '__main__':
    main()
