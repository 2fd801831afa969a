"""Model zoo downloads against a real HTTP server on 127.0.0.1 (no mocks)."""
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mmmambaout import zoo
from mmmambaout.zoo import (CheckpointDownloadError, ChecksumMismatchError, download_checkpoint,
                            load_model_index, resolve_checkpoint)

REPO = Path(__file__).resolve().parents[1]
PAYLOAD = bytes(range(256)) * 1000  # 256 kB, several read chunks are not needed to cut it


class _Handler(BaseHTTPRequestHandler):
    """Routes: /files/NAME (Range-aware), /cut/NAME (first GET sends half, then closes),
    /alwayscut/NAME, /norange/NAME (ignores Range), /redirect/NAME (302 to /files/NAME);
    anything else is a 404. Every request is logged with its Range header."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        kind, _, name = self.path.lstrip('/').partition('/')
        rng = self.headers.get('Range')
        srv.log.append((self.path, rng))
        body = srv.files.get(name)
        if body is None or kind not in ('files', 'cut', 'alwayscut', 'norange', 'redirect'):
            self.send_error(404)
            return
        if kind == 'redirect':
            self.send_response(302)
            self.send_header('Location', f'/files/{name}')
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        cut = kind == 'alwayscut' or (kind == 'cut' and srv.cut_done.get(name) is None)
        start = int(rng.split('=')[1].split('-')[0]) if rng and kind != 'norange' else 0
        if start:
            self.send_response(206)
            self.send_header('Content-Range', f'bytes {start}-{len(body) - 1}/{len(body)}')
        else:
            self.send_response(200)
        self.send_header('Content-Length', str(len(body) - start))
        self.end_headers()
        if cut:
            srv.cut_done[name] = True
            self.wfile.write(body[start:start + (len(body) - start) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body[start:])


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    httpd.files, httpd.log, httpd.cut_done = {}, [], {}
    httpd.url = f'http://127.0.0.1:{httpd.server_address[1]}'
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05, ), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    folder = tmp_path / 'cache'
    monkeypatch.setenv('MMMAMBAOUT_CACHE', str(folder))
    return folder


def sha(data):
    return hashlib.sha256(data).hexdigest()


def test_good_download_records_hash_and_reuses_cache(server, cache):
    server.files['a.pth'] = PAYLOAD
    path = download_checkpoint(f'{server.url}/files/a.pth', progress=False)
    assert path == str(cache / 'a.pth') and Path(path).read_bytes() == PAYLOAD
    assert not (cache / 'a.pth.part').exists()
    record = json.loads((cache / zoo.HASH_RECORD_NAME).read_text())
    assert record['a.pth']['sha256'] == sha(PAYLOAD)
    assert record['a.pth']['url'] == f'{server.url}/files/a.pth'
    assert download_checkpoint(f'{server.url}/files/a.pth') == path
    assert len(server.log) == 1  # second call served from the cache


def test_progress_bar(server, cache, capsys):
    server.files['p.pth'] = PAYLOAD
    download_checkpoint(f'{server.url}/files/p.pth', progress=True)
    assert 'p.pth' in capsys.readouterr().err


def test_cut_off_download_is_resumed_with_range(server, cache):
    server.files['c.pth'] = PAYLOAD
    path = download_checkpoint(f'{server.url}/cut/c.pth', progress=False)
    assert Path(path).read_bytes() == PAYLOAD
    assert server.log[0][1] is None
    assert server.log[1][1] == f'bytes={len(PAYLOAD) // 2}-'


def test_partial_file_from_earlier_run_is_resumed(server, cache):
    server.files['r.pth'] = PAYLOAD
    cache.mkdir()
    (cache / 'r.pth.part').write_bytes(PAYLOAD[:1000])
    path = download_checkpoint(f'{server.url}/files/r.pth', progress=False)
    assert Path(path).read_bytes() == PAYLOAD
    assert server.log == [('/files/r.pth', 'bytes=1000-')]


def test_server_ignoring_range_restarts(server, cache):
    server.files['n.pth'] = PAYLOAD
    cache.mkdir()
    (cache / 'n.pth.part').write_bytes(b'stale bytes')
    path = download_checkpoint(f'{server.url}/norange/n.pth', progress=False)
    assert Path(path).read_bytes() == PAYLOAD


def test_failed_download_leaves_no_file_at_final_path(server, cache):
    server.files['x.pth'] = PAYLOAD
    with pytest.raises(CheckpointDownloadError, match='cut off 2 times') as info:
        download_checkpoint(f'{server.url}/alwayscut/x.pth', progress=False, retries=1)
    assert str(cache / 'x.pth') in str(info.value)
    assert not (cache / 'x.pth').exists()
    assert (cache / 'x.pth.part').stat().st_size > 0  # kept for the next resume


def test_wrong_sha256_deletes_and_raises(server, cache):
    server.files['w.pth'] = PAYLOAD
    with pytest.raises(ChecksumMismatchError, match=f'expected {"0" * 64}.*got {sha(PAYLOAD)}'):
        download_checkpoint(f'{server.url}/files/w.pth', sha256='0' * 64, progress=False)
    assert not (cache / 'w.pth').exists() and not (cache / 'w.pth.part').exists()


def test_right_sha256_passes(server, cache):
    server.files['s.pth'] = PAYLOAD
    path = download_checkpoint(f'{server.url}/files/s.pth', sha256=sha(PAYLOAD).upper(),
                               progress=False)
    assert Path(path).read_bytes() == PAYLOAD


def test_404(server, cache):
    url = f'{server.url}/files/missing.pth'
    with pytest.raises(CheckpointDownloadError, match='HTTP 404') as info:
        download_checkpoint(url, progress=False)
    assert url in str(info.value) and str(cache / 'missing.pth') in str(info.value)
    assert not any(cache.iterdir()) or not (cache / 'missing.pth').exists()


def test_server_down_names_url_and_manual_path(cache):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    url = f'http://127.0.0.1:{port}/files/off.pth'
    with pytest.raises(CheckpointDownloadError) as info:
        download_checkpoint(url, progress=False)
    msg = str(info.value)
    assert url in msg and str(cache / 'off.pth') in msg and 'offline' in msg
    assert not (cache / 'off.pth').exists()


def test_redirect(server, cache):
    server.files['d.pth'] = PAYLOAD
    path = download_checkpoint(f'{server.url}/redirect/d.pth', progress=False)
    assert Path(path).name == 'd.pth' and Path(path).read_bytes() == PAYLOAD
    assert [p for p, _ in server.log] == ['/redirect/d.pth', '/files/d.pth']


def test_concurrent_downloads_fetch_once(server, cache):
    server.files['m.pth'] = PAYLOAD
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(
        download_checkpoint(f'{server.url}/files/m.pth', progress=False))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 1 and len(paths) == 4 and len(server.log) == 1


def test_cache_dir_env(tmp_path, monkeypatch):
    monkeypatch.delenv('MMMAMBAOUT_CACHE', raising=False)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'th'))
    assert zoo.cache_dir() == str(tmp_path / 'th' / 'hub' / 'checkpoints')
    import torch.hub  # the same folder torch.hub (and mmengine's URL loading) uses
    assert zoo.cache_dir() == os.path.join(torch.hub.get_dir(), 'checkpoints')
    monkeypatch.setenv('MMMAMBAOUT_CACHE', str(tmp_path / 'ours'))
    assert zoo.cache_dir() == str(tmp_path / 'ours')


def test_torch_home_download(server, tmp_path, monkeypatch):
    monkeypatch.delenv('MMMAMBAOUT_CACHE', raising=False)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'th'))
    server.files['t.pth'] = PAYLOAD
    path = resolve_checkpoint(f'{server.url}/files/t.pth', progress=False)
    assert path == str(tmp_path / 'th' / 'hub' / 'checkpoints' / 't.pth')


def _write_index(tmp_path, url, sha256=None):
    meta = {'Collections': [{'Name': 'Test'}],
            'Models': [{'Name': 'toy_in1k', 'In Collection': 'Test', 'Weights': url},
                       {'Name': 'toy_det', 'In Collection': 'Test', 'Config': 'configs/x.py'}]}
    if sha256:
        meta['Models'][0]['SHA256'] = sha256
    (tmp_path / 'meta.yml').write_text(json.dumps(meta))  # JSON is YAML
    (tmp_path / 'model-index.yml').write_text('Import:\n  - meta.yml\n')
    return load_model_index(str(tmp_path / 'model-index.yml'))


def test_zoo_name_resolution_and_index_hash(server, cache, tmp_path):
    server.files['toy.pth'] = PAYLOAD
    index = _write_index(tmp_path, f'{server.url}/files/toy.pth', sha(PAYLOAD))
    path = resolve_checkpoint('toy_in1k', index=index, progress=False)
    assert Path(path).read_bytes() == PAYLOAD
    with pytest.raises(FileNotFoundError, match='no released weights'):
        resolve_checkpoint('toy_det', index=index)
    with pytest.raises(FileNotFoundError, match='Did you mean: toy_in1k'):
        resolve_checkpoint('toy_in1kk', index=index)


def test_index_hash_mismatch_on_download(server, cache, tmp_path):
    server.files['toy.pth'] = PAYLOAD
    index = _write_index(tmp_path, f'{server.url}/files/toy.pth', 'ab' * 32)
    with pytest.raises(ChecksumMismatchError, match="model index entry 'toy_in1k'"):
        resolve_checkpoint('toy_in1k', index=index, progress=False)
    assert not (cache / 'toy.pth').exists()


def test_offline_hand_placed_file_is_used_and_its_hash_recorded(cache):
    # the real index: a file placed by hand where the error message says is used as is
    entry = load_model_index()['mambaout_tiny_in1k']
    cache.mkdir()
    (cache / entry.filename).write_bytes(PAYLOAD)
    assert resolve_checkpoint('mambaout_tiny_in1k') == str(cache / 'mambaout_tiny.pth')
    record = json.loads((cache / zoo.HASH_RECORD_NAME).read_text())
    assert record['mambaout_tiny.pth']['sha256'] == sha(PAYLOAD)
    # the file changes afterwards: it no longer matches the recorded hash
    (cache / entry.filename).write_bytes(PAYLOAD[:-1])
    with pytest.raises(ChecksumMismatchError, match='recorded when it was first fetched'):
        resolve_checkpoint('mambaout_tiny_in1k')
    assert not (cache / entry.filename).exists()


def test_model_index_entries():
    index = load_model_index()
    for name in ('mambaout_femto_in1k', 'mambaout_kobe_in1k', 'mambaout_tiny_in1k',
                 'mambaout_small_in1k', 'mambaout_base_in1k', 'vim_tiny_midclstok_in1k',
                 'vim_small_midclstok_ft_in1k'):
        assert index[name].weights.startswith('https://'), name
    for name in ('mask_rcnn_mambaout_t_1x_coco', 'upernet_mambaout_b_160k_ade20k',
                 'upernet_vim_s_160k_ade20k'):
        assert index[name].weights is None and index[name].config.startswith('configs/')
    import yaml
    for rel in yaml.safe_load((REPO / 'model-index.yml').read_text())['Import']:
        for model in yaml.safe_load((REPO / rel).read_text())['Models']:
            # measured results only with the weights they were measured on, with a source
            assert ('Results' in model) == ('Weights' in model), model['Name']
            if 'Results' in model:
                assert 'Results Source' in model, model['Name']
            if 'Paper Results' in model:
                assert 'Paper Results Source' in model, model['Name']


def test_cli(server, cache):
    server.files['cli.pth'] = PAYLOAD
    tool = str(REPO / 'tools' / 'download_checkpoint.py')
    out = subprocess.run([sys.executable, tool, f'{server.url}/files/cli.pth', '--quiet',
                          '--sha256', sha(PAYLOAD), '--dest', str(cache / 'd')],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(cache / 'd' / 'cli.pth')
    bad = subprocess.run([sys.executable, tool, f'{server.url}/files/nothere.pth', '--quiet'],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and 'HTTP 404' in bad.stderr and 'Traceback' not in bad.stderr
