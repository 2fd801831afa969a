"""Safe checkpoint loading: never runs pickled code; safetensors; damaged files; URLs."""
import argparse
import pickle
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from safetensors.torch import save_file

from mmmambaout.checkpoint import (CorruptCheckpointError, UnsafeCheckpointError,
                                   extract_state_dict, load_checkpoint_file)


class _Evil:
    """Unpickling this would create ``marker`` (builtins.open in write mode)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, 'w'))


@pytest.fixture()
def served(tmp_path, monkeypatch):
    """A real HTTP server on 127.0.0.1 serving tmp_path/www; downloads go to tmp_path/cache."""
    www = tmp_path / 'www'
    www.mkdir()
    monkeypatch.setenv('MMMAMBAOUT_CACHE', str(tmp_path / 'cache'))
    handler = partial(SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05, ), daemon=True).start()
    yield www, f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()
    httpd.server_close()


def test_plain_state_dict_and_namespace_args(tmp_path):
    sd = {'w': torch.arange(4.)}
    torch.save({'model': sd, 'args': argparse.Namespace(lr=1e-3)}, tmp_path / 'vim.pth')
    ckpt = load_checkpoint_file(tmp_path / 'vim.pth')
    assert ckpt['args'].lr == 1e-3 and torch.equal(extract_state_dict(ckpt)['w'], sd['w'])


@pytest.mark.parametrize('writer', ['torch_save', 'raw_pickle'])
def test_evil_pickle_does_not_run(tmp_path, writer):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    if writer == 'torch_save':
        torch.save({'state_dict': {'w': torch.ones(1)}, 'x': _Evil(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    with pytest.raises(UnsafeCheckpointError, match='refused to load'):
        load_checkpoint_file(path)
    assert not marker.exists()


def test_evil_pickle_downloaded_does_not_run(served, tmp_path):
    www, url = served
    marker = tmp_path / 'pwned'
    torch.save({'x': _Evil(marker)}, www / 'evil.pth')
    with pytest.raises(UnsafeCheckpointError, match='arbitrary code'):
        load_checkpoint_file(f'{url}/evil.pth')
    assert not marker.exists()
    assert (tmp_path / 'cache' / 'evil.pth').exists()  # downloaded, but never executed


def test_safetensors_download(served, tmp_path):
    www, url = served
    sd = {'a': torch.randn(3, 4), 'b': torch.zeros(2, dtype=torch.int64)}
    save_file(sd, str(www / 'm.safetensors'))
    out = load_checkpoint_file(f'{url}/m.safetensors')
    assert set(out) == {'a', 'b'} and torch.equal(out['a'], sd['a'])


@pytest.mark.parametrize('kind', ['zip', 'legacy', 'safetensors', 'empty'])
def test_truncated_checkpoint_gives_clear_error(tmp_path, kind):
    sd = {'w': torch.randn(64, 64)}
    path = tmp_path / ('m.safetensors' if kind == 'safetensors' else 'm.pth')
    if kind == 'safetensors':
        save_file(sd, str(path))
    else:
        torch.save(sd, path, _use_new_zipfile_serialization=(kind != 'legacy'))
    data = path.read_bytes()
    path.write_bytes(b'' if kind == 'empty' else data[:len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match='damaged'):
        load_checkpoint_file(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='download_checkpoint.py'):
        load_checkpoint_file(tmp_path / 'nothere.pth')


def test_zoo_name_as_checkpoint(tmp_path, monkeypatch):
    """What a config's ``init_cfg=dict(type='Pretrained', checkpoint='mambaout_femto_in1k')``
    reaches: the zoo entry's file in the cache (here placed by hand, as when offline)."""
    monkeypatch.setenv('MMMAMBAOUT_CACHE', str(tmp_path))
    torch.save({'w': torch.ones(2)}, tmp_path / 'mambaout_femto.pth')
    assert torch.equal(load_checkpoint_file('mambaout_femto_in1k')['w'], torch.ones(2))
