"""``import mmmambaout``: registers the modules and provides the mmcv op backend; nothing
else global (no warning filters)."""
import json
import subprocess
import sys

# Runs in a fresh interpreter. Every filter that appears in ``warnings.filters`` during
# ``import mmmambaout`` must have been added by a third-party library (numpy, torch, scipy
# ... add their own at import); filters inside ``warnings.catch_warnings()`` are gone
# again afterwards and so do not count.
_PROBE = r'''
import json, sys, warnings

added_by = {}


def spy(add):
    def wrapper(*args, **kwargs):
        before = list(warnings.filters)
        try:
            return add(*args, **kwargs)
        finally:
            caller = sys._getframe(1).f_globals.get('__name__', '?')
            for entry in warnings.filters:
                if entry not in before:
                    added_by[repr(entry)] = caller
    return wrapper


warnings.filterwarnings = spy(warnings.filterwarnings)
warnings.simplefilter = spy(warnings.simplefilter)
before = list(warnings.filters)
import mmmambaout
new = [repr(entry) for entry in warnings.filters if entry not in before]
import mmcv.ops  # fails on mmcv-lite unless mmmambaout provided mmcv._ext
from mmdet.registry import MODELS
json.dump(dict(new={e: added_by.get(e, 'unknown') for e in new},
               registered=MODELS.get('MambaOut') is not None,
               nms=hasattr(mmcv.ops, 'nms')), sys.stdout)
'''


def test_import_adds_no_warning_filters_and_installs_the_op_backend():
    out = subprocess.run([sys.executable, '-c', _PROBE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    ours = {entry: by for entry, by in result['new'].items()
            if by == 'unknown' or by.split('.')[0] == 'mmmambaout'}
    assert not ours, f'import mmmambaout left warning filters behind: {ours}'
    assert result['registered'] and result['nms']
