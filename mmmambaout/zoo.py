"""Model zoo: the index of released checkpoints, and a safe downloader with a cache.

``resolve_checkpoint(spec)`` turns what a config names as a checkpoint into a local file:

* a local path: returned as it is;
* an ``http(s)://`` URL: downloaded once into the cache, then reused;
* a zoo name such as ``mambaout_tiny_in1k`` (see ``model-index.yml``): its ``Weights``
  URL, downloaded the same way.

Cache folder: ``$MMMAMBAOUT_CACHE`` if set, else ``$TORCH_HOME/hub/checkpoints`` (TORCH_HOME
defaults to ``~/.cache/torch``): the folder torch.hub and mmengine download into, so files
they fetched are reused.

Downloads go to ``<file>.part`` and are renamed to ``<file>`` only once complete and
verified, so the final path never holds a partial file. An interrupted download is
resumed with an HTTP ``Range`` request (a server that ignores it restarts from zero).
Integrity: the expected SHA-256 is the one passed in, else the index's ``SHA256`` field,
else the one recorded in ``<cache>/mmmambaout_hashes.json`` the first time the file was
seen (trust on first use). A file that does not match is deleted and
:class:`ChecksumMismatchError` is raised. A cached file is re-hashed only when its size or
modification time differs from the record. Downloads of the same file by several
processes (one per GPU) are serialised with a lock file.

Only the standard library (and ``mmmambaout.utils.cli_base``, which needs no more) is
imported at module import time; tqdm and yaml are imported when needed. Download and
checksum errors are :class:`~mmmambaout.utils.cli_base.UserError`: our tools print them
as one line.
"""
import hashlib
import http.client
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Dict, Optional

from mmmambaout_mmcv_finder import load_submodule

CACHE_ENV = 'MMMAMBAOUT_CACHE'
HASH_RECORD_NAME = 'mmmambaout_hashes.json'
_CHUNK = 1 << 20

__all__ = [
    'CheckpointDownloadError', 'ChecksumMismatchError', 'ZooEntry', 'cache_dir',
    'download_checkpoint', 'get_zoo_entry', 'load_model_index', 'model_index_path',
    'resolve_checkpoint', 'sha256_file'
]


# our tools report a UserError as one `error:` line without a traceback; cli_base is
# loaded without the package's __init__, as this module is by tools/download_checkpoint.py
UserError = load_submodule('mmmambaout.utils.cli_base').UserError


class CheckpointDownloadError(UserError, OSError):
    """A checkpoint could not be downloaded (offline, HTTP error, cut off too often)."""


class ChecksumMismatchError(UserError, RuntimeError):
    """A checkpoint's SHA-256 differs from the expected one (the file was deleted)."""


# -- the index ------------------------------------------------------------------------


@dataclass(frozen=True)
class ZooEntry:
    name: str
    collection: Optional[str] = None
    config: Optional[str] = None
    weights: Optional[str] = None
    sha256: Optional[str] = None
    metafile: Optional[str] = None

    @property
    def filename(self) -> Optional[str]:
        return _url_filename(self.weights) if self.weights else None


def model_index_path() -> str:
    """Path of ``model-index.yml``: the package's ``.mim`` copy (wheel installs), else
    the one at the root of the source checkout (editable installs)."""
    pkg = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.path.join(pkg, '.mim', 'model-index.yml'),
                  os.path.join(os.path.dirname(pkg), 'model-index.yml')]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError('model-index.yml not found; looked at ' + ', '.join(candidates))


_INDEX_CACHE: Dict[str, Dict[str, ZooEntry]] = {}


def load_model_index(path: Optional[str] = None) -> Dict[str, ZooEntry]:
    """Read ``model-index.yml`` and the metafiles it imports; returns {name: ZooEntry}."""
    import yaml

    path = os.path.abspath(path or model_index_path())
    if path in _INDEX_CACHE:
        return _INDEX_CACHE[path]
    root = os.path.dirname(path)
    with open(path) as f:
        index = yaml.safe_load(f) or {}
    docs = [(path, index)]
    for rel in index.get('Import', []):
        meta_path = os.path.join(root, rel)
        with open(meta_path) as f:
            docs.append((meta_path, yaml.safe_load(f) or {}))
    entries = {}
    for meta_path, doc in docs:
        for model in doc.get('Models', []) or []:
            name = model['Name']
            if name in entries:
                raise ValueError(f'zoo name {name!r} is defined twice ({meta_path})')
            sha = model.get('SHA256')
            entries[name] = ZooEntry(
                name=name, collection=model.get('In Collection'), config=model.get('Config'),
                weights=model.get('Weights'), sha256=sha.lower() if sha else None,
                metafile=os.path.relpath(meta_path, root))
    _INDEX_CACHE[path] = entries
    return entries


def get_zoo_entry(name: str, index: Optional[Dict[str, ZooEntry]] = None) -> ZooEntry:
    index = load_model_index() if index is None else index
    if name not in index:
        import difflib
        close = difflib.get_close_matches(name, list(index), n=3)
        hint = f' Did you mean: {", ".join(close)}?' if close else ''
        raise KeyError(f'{name!r} is not in the model zoo.{hint} Known names: '
                       f'{", ".join(sorted(index))}')
    return index[name]


# -- cache and hashes -----------------------------------------------------------------


def cache_dir() -> str:
    """``$MMMAMBAOUT_CACHE``, else ``$TORCH_HOME/hub/checkpoints`` (torch.hub's folder)."""
    if os.environ.get(CACHE_ENV):
        return os.path.expanduser(os.environ[CACHE_ENV])
    torch_home = os.environ.get('TORCH_HOME') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'torch')
    return os.path.join(os.path.expanduser(torch_home), 'hub', 'checkpoints')


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(_CHUNK), b''):
            h.update(chunk)
    return h.hexdigest()


def _read_record(folder: str) -> dict:
    try:
        with open(os.path.join(folder, HASH_RECORD_NAME)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _write_record(folder: str, filename: str, path: str, sha256: str, url: Optional[str]):
    record = _read_record(folder)
    st = os.stat(path)
    old = record.get(filename, {})
    record[filename] = dict(sha256=sha256, size=st.st_size, mtime_ns=st.st_mtime_ns,
                            url=url or old.get('url'))
    tmp = os.path.join(folder, f'.{HASH_RECORD_NAME}.{os.getpid()}.tmp')
    with open(tmp, 'w') as f:
        json.dump(record, f, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(folder, HASH_RECORD_NAME))


class _FileLock:
    """Advisory lock (POSIX flock) so that several processes download a file once."""

    def __init__(self, path):
        self.path, self.fd = path, None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # Windows: no lock
            return self
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            import fcntl
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


def _check_file(path: str, expected: Optional[str], source: str, url: Optional[str]):
    """Verify ``path`` against ``expected`` (hashing it unless the record proves it
    unchanged), record its hash; on mismatch delete it and raise."""
    folder, filename = os.path.split(path)
    rec = _read_record(folder).get(filename)
    if expected is None and rec:
        record = os.path.join(folder, HASH_RECORD_NAME)
        expected, source = rec['sha256'], f'the hash recorded when it was first fetched ({record})'
    st = os.stat(path)
    if (rec and expected and rec.get('sha256') == expected and rec.get('size') == st.st_size
            and rec.get('mtime_ns') == st.st_mtime_ns):
        return
    actual = sha256_file(path)
    if expected and actual != expected:
        os.remove(path)
        raise ChecksumMismatchError(
            f'SHA-256 mismatch for {path} (from {url or "a local copy"}): expected {expected} '
            f'({source}), got {actual}. The file was deleted; download it again. If the '
            'source legitimately changed, update the expected hash.')
    _write_record(folder, filename, path, actual, url)


# -- download -------------------------------------------------------------------------


def _url_filename(url: str) -> str:
    name = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    if not name:
        raise ValueError(f'cannot derive a file name from URL {url!r}')
    return name


def _manual_hint(url: str, path: str) -> str:
    return (f'\nIf you are offline, download {url} elsewhere and place the file at\n'
            f'    {path}\n(cache folder: ${CACHE_ENV} if set, else $TORCH_HOME/hub/checkpoints).')


class _Incomplete(Exception):
    pass


def _fetch(url: str, part: str, progress: bool, timeout: float):
    """One HTTP request: resume ``part`` if it has bytes, else start it."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    headers = {'User-Agent': 'mmmambaout-download'}
    if have:
        headers['Range'] = f'bytes={have}-'
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # range beyond the end: the part is stale
            os.remove(part)
            raise _Incomplete('server refused the resume range') from err
        raise
    with resp:
        length = resp.headers.get('Content-Length')
        length = int(length) if length is not None else None
        if have and resp.status == 206:
            crange = resp.headers.get('Content-Range', '')  # bytes START-END/TOTAL
            try:
                start = int(crange.split()[1].split('-')[0])
            except (IndexError, ValueError):
                start = -1
            if start != have:
                os.remove(part)
                raise _Incomplete(f'unexpected Content-Range {crange!r}')
            mode, total = 'ab', (have + length if length is not None else None)
        else:  # 200: the server sent the whole file (range ignored or not asked)
            mode, have, total = 'wb', 0, length
        bar = None
        if progress:
            try:
                from tqdm import tqdm
                bar = tqdm(total=total, initial=have, unit='B', unit_scale=True,
                           unit_divisor=1024, desc=os.path.basename(part)[:-5], file=sys.stderr)
            except ImportError:
                pass
        size = have
        try:
            with open(part, mode) as f:
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    size += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    if total is not None and size != total:
        raise _Incomplete(f'connection closed after {size} of {total} bytes')


def download_checkpoint(url: str, dest: Optional[str] = None, sha256: Optional[str] = None,
                        progress: Optional[bool] = None, retries: int = 3,
                        timeout: float = 30.0,
                        index: Optional[Dict[str, ZooEntry]] = None) -> str:
    """Download ``url`` into ``dest`` (default: :func:`cache_dir`) unless already there;
    return the local path. See the module docstring for resume, hashes and the lock.

    Args:
        sha256: expected hex digest; default: the index's, else the recorded one.
        progress: show a progress bar; default: only when stderr is a terminal.
        retries: how many times a cut-off transfer is resumed within this call.
        index: model index to look ``url`` up in (default: :func:`load_model_index`).
    """
    dest = os.path.expanduser(dest or cache_dir())
    path = os.path.join(dest, _url_filename(url))
    source = 'given'
    if sha256 is None:
        entry = _entry_for_url(url, index)
        if entry is not None and entry.sha256:
            sha256, source = entry.sha256, f'model index entry {entry.name!r}'
    sha256 = sha256.lower() if sha256 else None
    if progress is None:
        progress = sys.stderr.isatty()
    os.makedirs(dest, exist_ok=True)
    part = path + '.part'
    with _FileLock(os.path.join(dest, f'.{os.path.basename(path)}.lock')):
        if os.path.isfile(path):  # cached (possibly by another process meanwhile)
            _check_file(path, sha256, source, url)
            return path
        for attempt in range(retries + 1):
            try:
                _fetch(url, part, progress, timeout)
                break
            except _Incomplete as err:
                last = err
            except urllib.error.HTTPError as err:
                if err.code < 500 or attempt == retries:
                    raise CheckpointDownloadError(
                        f'could not download {url}: HTTP {err.code} {err.reason}.'
                        + _manual_hint(url, path)) from err
                last = err
            except (OSError, http.client.HTTPException) as err:
                started = os.path.exists(part) and os.path.getsize(part) > 0
                if not started or attempt == retries:  # offline / refused: no retry
                    reason = getattr(err, 'reason', err)
                    raise CheckpointDownloadError(
                        f'could not download {url}: {reason}.' + _manual_hint(url, path)
                        + ('\nThe partial download is kept and will be resumed.'
                           if started else '')) from err
                last = err
        else:
            raise CheckpointDownloadError(
                f'download of {url} was cut off {retries + 1} times ({last}); the partial '
                f'file {part} is kept and the next attempt resumes it.' + _manual_hint(url, path))
        actual = sha256_file(part)
        if sha256 and actual != sha256:
            os.remove(part)
            raise ChecksumMismatchError(
                f'SHA-256 mismatch for {url}: expected {sha256} ({source}), got {actual}. '
                'The downloaded file was deleted. The file on the server differs from the '
                'one the hash was made for (or was corrupted in transit).')
        os.replace(part, path)
        _write_record(dest, os.path.basename(path), path, actual, url)
    return path


def _entry_for_url(url: str, index=None) -> Optional[ZooEntry]:
    if index is None:
        try:
            index = load_model_index()
        except (OSError, ImportError):
            return None
    return next((e for e in index.values() if e.weights == url), None)


def resolve_checkpoint(spec, dest: Optional[str] = None, sha256: Optional[str] = None,
                       progress: Optional[bool] = None,
                       index: Optional[Dict[str, ZooEntry]] = None) -> str:
    """Local path for ``spec``: an existing file, an http(s) URL or a zoo name (looked
    up in ``index``, default :func:`load_model_index`); see :func:`download_checkpoint`."""
    spec = os.fspath(spec)
    local = os.path.expanduser(spec)
    if os.path.isfile(local):
        return local
    if spec.startswith(('http://', 'https://')):
        return download_checkpoint(spec, dest=dest, sha256=sha256, progress=progress,
                                   index=index)
    looks_like_path = os.sep in spec or spec.endswith(('.pth', '.pt', '.bin', '.ckpt',
                                                       '.safetensors'))
    if not looks_like_path:
        if index is None:
            try:
                index = load_model_index()
            except (OSError, ImportError):
                index = {}
        if spec in index:
            entry = index[spec]
            if not entry.weights:
                raise FileNotFoundError(
                    f'model zoo entry {spec!r} has no released weights (config: '
                    f'{entry.config}); train it or pass a checkpoint file.')
            return download_checkpoint(entry.weights, dest=dest, sha256=sha256,
                                       progress=progress, index=index)
        if index:
            try:
                get_zoo_entry(spec, index)
            except KeyError as err:
                raise FileNotFoundError(f'checkpoint {spec!r} is neither a file, a URL nor a '
                                        f'model zoo name. {err.args[0]}') from None
    raise FileNotFoundError(
        f'checkpoint file not found: {spec!r}. Check the path, or download it with '
        '`python tools/download_checkpoint.py NAME_OR_URL`.')
