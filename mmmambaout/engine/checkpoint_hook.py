"""A CheckpointHook that a SIGKILL can never leave without a checkpoint to resume from.

mmengine's CheckpointHook writes ``iter_N.pth`` in place, then overwrites
``last_checkpoint``, and with ``max_keep_ckpts`` deletes old checkpoints *before*
saving the new one. A kill during any of these can leave a truncated ``iter_N.pth``
that ``last_checkpoint`` (or ``--resume``) points at, an empty ``last_checkpoint``,
or no checkpoint at all. Here every file is written to a temporary name and renamed
(atomic on POSIX), ``last_checkpoint`` moves only after the checkpoint is complete, and
old checkpoints go only after that.
"""
import os
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS


def _atomic_write_text(path, text):
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):

    def _save_checkpoint_with_step(self, runner, step, meta):
        from mmengine.fileio import LocalBackend
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_checkpoint_with_step(runner, step, meta)

        dropped = None
        if self.max_keep_ckpts > 0 and (not self.keep_ckpt_ids or self.keep_ckpt_ids[-1] != step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                dropped = self.keep_ckpt_ids[0]
            self.keep_ckpt_ids.append(step)  # a deque with maxlen: drops the oldest
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        tmp_filename = f'.{ckpt_filename}.partial'
        runner.save_checkpoint(
            self.out_dir, tmp_filename, self.file_client_args, save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
            backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        tmp_path = osp.join(self.out_dir, tmp_filename)
        with open(tmp_path, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, self.last_ckpt)
        _atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)

        if dropped is not None:
            old = osp.join(self.out_dir, self.filename_tmpl.format(dropped))
            if osp.isfile(old):
                os.remove(old)
