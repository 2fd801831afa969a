"""A crash while a checkpoint is written never leaves the run without one to resume from."""
import pytest


def _die_while_writing(monkeypatch, at_call):
    """The at_call-th checkpoint write stops half-way, as a SIGKILL would leave it."""
    from mmengine.fileio.backends.local_backend import LocalBackend
    real_put, calls = LocalBackend.put, []

    def put(self, obj, filepath):
        calls.append(filepath)
        if len(calls) == at_call:
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
            raise KeyboardInterrupt('killed while writing the checkpoint')
        return real_put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', put)


@pytest.mark.parametrize('max_keep_ckpts', [-1, 1])
def test_crash_during_write_keeps_last_complete_checkpoint(tmp_path, monkeypatch, make_tiny_runner,
                                                           max_keep_ckpts):
    hook = dict(type='AtomicCheckpointHook', interval=3, by_epoch=False,
                max_keep_ckpts=max_keep_ckpts)
    runner = make_tiny_runner(tmp_path, max_iters=9, checkpoint=hook)
    _die_while_writing(monkeypatch, at_call=2)  # the save at iteration 6
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    monkeypatch.undo()
    assert (tmp_path / 'last_checkpoint').read_text().strip().endswith('iter_3.pth')
    assert (tmp_path / 'iter_3.pth').is_file()  # not removed before the new one existed
    assert not (tmp_path / 'iter_6.pth').exists()  # no truncated file under a final name

    resumed = make_tiny_runner(tmp_path, max_iters=9, resume=True, checkpoint=hook)
    resumed.train()
    assert resumed.iter == 9
    assert (tmp_path / 'last_checkpoint').read_text().strip().endswith('iter_9.pth')
    kept = sorted(p.name for p in tmp_path.glob('iter_*.pth'))
    assert kept == (['iter_9.pth'] if max_keep_ckpts == 1 else ['iter_3.pth', 'iter_6.pth', 'iter_9.pth'])
