"""The user docs (README.md, CHANGELOG.md, docs/*.md) describe what is true now: no diary
words (session numbers, machine leases, "this machine"), and every relative link or repo
path they name exists.

Checked paths: markdown links ``[text](target)`` that are not URLs (a ``#anchor`` into a
markdown file must name one of its headings, with GitHub's heading slugs), and file paths
in inline code or code blocks that start with a top-level folder of the repository
(``configs/...``, ``tools/...``, ``docs/...``, ...): ``{a,b}`` alternatives are expanded,
``*`` must match at least one file, ``#key=value`` overrides after a config are dropped.
"""
import glob
import itertools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted(['README.md', 'CHANGELOG.md'] + [
    str(p.relative_to(ROOT)) for p in (ROOT / 'docs').glob('*.md')])

# A diary records who measured what when; the docs say what is true and where the dated
# numbers are. Each pattern names the phrase it stands for; "release(d)", a "process
# session" or "setsid" do not match.
DIARY = [
    (r'\bsession[- ]?\d', 'a session number ("session 5", "session-6")'),
    (r"\b(this|previous|last|next|first|1st|second|2nd|another|that) session\b",
     'a session of work ("this session", "the previous session")'),
    (r"\bsession's\b", 'a session as an owner'),
    (r'\bleases?\b', 'a machine lease ("lease M", "each lease")'),
    (r'\bthis (machine|host|card|cpu|vm)\b', 'the writer\'s machine ("this machine")'),
    (r"\bthis project's (\d+-core|cpu|machine|device)", "the writer's machine"),
    (r'\bon this \d+-core\b', "the writer's machine"),
    (r'`device` machines?', 'the machines the project borrows'),
    (r'\bdevice (time|budget)\b', 'the borrowed device time'),
    (r"\btoday's (default|code|segmentation default)\b", 'a default relative to a day'),
]
DIARY_RE = [(re.compile(p, re.IGNORECASE), what) for p, what in DIARY]

TOP_DIRS = ('configs', 'tools', 'docs', 'demo', 'tests', 'mmmambaout')
# a path in code: top-level folder, then path characters or {a,b} alternatives
PATH_RE = re.compile(r'(?<![\w./:-])((?:%s)/(?:[\w.*-]|\{[\w.,-]*\}|/)*)' % '|'.join(TOP_DIRS))
LINK_RE = re.compile(r'(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)')
CODE_SPAN_RE = re.compile(r'`([^`]+)`')
FENCE_RE = re.compile(r'^(```|~~~)')


def read(name):
    return (ROOT / name).read_text(encoding='utf-8')


def code_chunks(text):
    """Fenced blocks, indented blocks and inline code spans (which may wrap a line)."""
    code, prose, fenced = [], [], False
    for line in text.splitlines():
        if FENCE_RE.match(line.strip()):
            fenced = not fenced
        elif fenced or line.startswith('    '):
            code.append(line)
        else:
            prose.append(line)
    return code + CODE_SPAN_RE.findall('\n'.join(prose))


def slugs(markdown):
    """GitHub's anchors of a markdown file's headings."""
    seen, out = {}, set()
    in_fence = False
    for line in markdown.splitlines():
        if FENCE_RE.match(line.strip()):
            in_fence = not in_fence
        m = None if in_fence else re.match(r'#{1,6}\s+(.*?)\s*#*\s*$', line)
        if not m:
            continue
        text = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', m.group(1))  # links: their text
        slug = re.sub(r'[^\w\- ]', '', text.lower()).replace(' ', '-')
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f'{slug}-{n}')
    return out


def expand_braces(path):
    parts = re.split(r'\{([^{}]*)\}', path)
    choices = [[p] if i % 2 == 0 else p.split(',') for i, p in enumerate(parts)]
    return [''.join(c) for c in itertools.product(*choices)]


def exists(path):
    path = path.split('#')[0].rstrip('.,;:')
    if not path:
        return True
    for candidate in expand_braces(path):
        if '*' in candidate:
            if not glob.glob(str(ROOT / candidate), recursive=True):
                return False
        elif not (ROOT / candidate).exists():
            return False
    return True


@pytest.mark.parametrize('name', DOCS)
def test_no_diary_words(name):
    found = []
    for number, line in enumerate(read(name).splitlines(), 1):
        for pattern, what in DIARY_RE:
            m = pattern.search(line)
            if m:
                found.append(f'{name}:{number}: {m.group(0)!r} ({what}): {line.strip()[:100]}')
    assert not found, ('say what is true now and link to the dated table instead:\n'
                       + '\n'.join(found))


@pytest.mark.parametrize('pattern, what', DIARY)
def test_diary_patterns_leave_plain_words_alone(pattern, what):
    plain = ('the released weights; a release file; mmcv releases; a process session via '
             'setsid; this model; the session token of a login; pleased')
    assert not re.search(pattern, plain, re.IGNORECASE), what


def test_diary_patterns_catch_the_old_phrases():
    phrases = ['session 5 defaults', "session 5's default", 'session-6 GPU runs',
               'lease M', 'each lease a different host', 'on this machine',
               "on this project's 2-core machine", 'this session', 'the previous session',
               "the project's `device` machines", 'the device budget of the session',
               "today's default", 'Re-measured on this CPU']
    for phrase in phrases:
        assert any(p.search(phrase) for p, _ in DIARY_RE), phrase


@pytest.mark.parametrize('name', DOCS)
def test_relative_links_and_paths_exist(name):
    text = read(name)
    base = (ROOT / name).parent
    missing = []
    for target in LINK_RE.findall(text):
        if re.match(r'[a-z][a-z0-9+.-]*:', target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition('#')
        file = (base / path).resolve() if path else ROOT / name
        if not file.exists():
            missing.append(f'link {target}')
        elif anchor and file.suffix == '.md' and anchor not in slugs(file.read_text()):
            missing.append(f'link {target}: no heading with that anchor')
    for chunk in code_chunks(text):
        for path in PATH_RE.findall(chunk):
            if not exists(path):
                missing.append(f'path {path}')
    assert not missing, f'{name} names what does not exist:\n' + '\n'.join(missing)


def test_path_helpers():
    assert expand_braces('configs/a_{t,s}_b.py') == ['configs/a_t_b.py', 'configs/a_s_b.py']
    assert exists('configs/mambaout_{f,k,t,s,b}_in1k.py')
    assert exists('configs/mask_rcnn_mambaout_t_1x_coco.py#model.backbone.compile_stages=False')
    assert exists('configs/*_hybrid_*.py') and not exists('configs/*_nonesuch_*.py')
    assert PATH_RE.findall('python tools/train.py configs/x.py --cfg-options a=b') == [
        'tools/train.py', 'configs/x.py']
    assert PATH_RE.findall('mmdet::configs/x.py data/coco/ ./tools') == []
    assert slugs('# A `b` (c, 1-2)\n## Train on COCO / ADE20K\n# A `b` (c, 1-2)') == {
        'a-b-c-1-2', 'train-on-coco--ade20k', 'a-b-c-1-2-1'}
