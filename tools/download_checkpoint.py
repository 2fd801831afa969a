#!/usr/bin/env python
"""Download a pretrained checkpoint into the cache (or --dest) and verify it.

    python tools/download_checkpoint.py mambaout_tiny_in1k
    python tools/download_checkpoint.py https://.../file.pth --sha256 HEX --dest ckpts/
    python tools/download_checkpoint.py --list

Cache: $MMMAMBAOUT_CACHE, else $TORCH_HOME/hub/checkpoints (torch.hub's folder). An
interrupted download is resumed on the next run. Prints the local path on stdout.
"""
import argparse
import os
import sys



def _load_zoo():
    """Import mmmambaout/zoo.py alone: downloading needs neither torch nor OpenMMLab."""
    import importlib.util
    spec = importlib.util.find_spec('mmmambaout')
    pkg_dirs = list(spec.submodule_search_locations) if spec else []
    pkg_dirs.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'mmmambaout'))
    path = next(p for p in (os.path.join(d, 'zoo.py') for d in pkg_dirs) if os.path.isfile(p))
    mod_spec = importlib.util.spec_from_file_location('mmmambaout_zoo', path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


def _cli_base():
    """mmmambaout.utils.cli_base (run_cli, UserError), also without the package's __init__."""
    import importlib.util
    name = 'mmmambaout.utils.cli_base'
    if name not in sys.modules:
        path = os.path.join(os.path.dirname(_ZOO_PATH), 'utils', 'cli_base.py')
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


zoo = _load_zoo()
_ZOO_PATH = zoo.__file__
cli_base = _cli_base()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('name', nargs='?', help='model zoo name or http(s) URL')
    parser.add_argument('--dest', help='folder to save into (default: the cache folder)')
    parser.add_argument('--sha256', help='expected SHA-256 (hex); overrides the index')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    parser.add_argument('--list', action='store_true', help='list the model zoo and exit')
    cli_base.add_debug_arg(parser)
    args = parser.parse_args(argv)
    if args.list:
        for entry in zoo.load_model_index().values():
            print(f'{entry.name:32s} {entry.weights or "(no released weights)"}')
        return 0
    if not args.name:
        parser.error('give a model zoo name or a URL (or --list)')
    try:
        path = zoo.resolve_checkpoint(args.name, dest=args.dest, sha256=args.sha256,
                                      progress=False if args.quiet else None)
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise cli_base.UserError(str(msg)) from err
    print(path)
    return 0


if __name__ == '__main__':
    sys.exit(cli_base.run_cli(main))
