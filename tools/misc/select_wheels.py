"""Which packages of a ``pip install --dry-run --report`` resolution to download, without
the excluded ones *and what only they need*.

Used by tools/make_wheelhouse.sh. Excluding ``torch`` (a GPU node has its own CUDA build)
must also drop torch's own dependencies (``nvidia-*``, ``triton``, a CUDA 12
``cuda-bindings``...), which would otherwise be downloaded and, installed on a CUDA 13
node, shadow its own. So the set is walked as a graph: from the requested package through
each ``Requires-Dist`` whose marker holds on the target (the report's environment with the
target's Python version, and the extras each package was asked for), never entering an
excluded package. A dependency that a kept package also needs stays.

    python tools/misc/select_wheels.py REPORT.json 'torch,torchvision,nvidia-*' --python 3.12
prints ``name==version`` per line.
"""
import argparse
import fnmatch
import json
import re
import sys

from packaging.requirements import Requirement


def normalize(name: str) -> str:
    return re.sub(r'[-_.]+', '-', name).lower()


def select(report: dict, exclude, python=None):
    """``[(name, version)]`` of the report's packages reachable from the requested ones
    without passing through a package matching a pattern of ``exclude``."""
    items = {normalize(i['metadata']['name']): i for i in report['install']}
    env = dict(report.get('environment', {}))
    if python:
        env.update(python_version=python, python_full_version=f'{python}.0')
    excluded = lambda name: any(fnmatch.fnmatch(name, normalize(p)) for p in exclude)  # noqa: E731

    keep, todo = {}, [(n, set(i.get('requested_extras') or ()))
                      for n, i in items.items() if i.get('requested')]
    while todo:
        name, extras = todo.pop()
        if name not in items or excluded(name):
            continue
        new = extras - keep.get(name, set())
        if name in keep and not new:
            continue
        keep[name] = keep.get(name, set()) | extras
        for line in items[name]['metadata'].get('requires_dist') or ():
            req = Requirement(line)
            wanted = not req.marker or any(
                req.marker.evaluate(dict(env, extra=e)) for e in (keep[name] or {''}))
            if wanted:
                todo.append((normalize(req.name), set(req.extras)))
    return [(items[n]['metadata']['name'], items[n]['metadata']['version'])
            for n in sorted(keep) if not items[n].get('requested')]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('report')
    parser.add_argument('exclude', nargs='?', default='',
                        help='comma-separated names or shell globs, e.g. "torch,nvidia-*"')
    parser.add_argument('--python', help='target Python version X.Y for markers')
    args = parser.parse_args(argv)
    with open(args.report) as f:
        report = json.load(f)
    for name, version in select(report, [p for p in args.exclude.split(',') if p], args.python):
        print(f'{name}=={version}')


if __name__ == '__main__':
    sys.exit(main())
