"""A CheckpointHook that a SIGKILL can never leave without a checkpoint to resume from.

mmengine's CheckpointHook writes ``iter_N.pth`` in place, then overwrites
``last_checkpoint``, and with ``max_keep_ckpts`` deletes old checkpoints *before*
saving the new one. A kill during any of these can leave a truncated ``iter_N.pth``
that ``last_checkpoint`` (or ``--resume``) points at, an empty ``last_checkpoint``,
or no checkpoint at all. Here every file is written to a temporary name and renamed
(atomic on POSIX), ``last_checkpoint`` moves only after the checkpoint is complete, and
old checkpoints go only after that. The best checkpoint (``save_best``) is written the
same way, and the previous best is removed only once the new one is in place
(mmengine removes it first).

:meth:`AtomicCheckpointHook.save_atomically` is the one writing path; the
``PreemptionCheckpointHook`` saves through it too.
"""
import contextlib
import logging
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


class _DropMessages(logging.Filter):

    def __init__(self, *fragments):
        super().__init__()
        self.fragments = fragments

    def filter(self, record):
        return not any(f in record.getMessage() for f in self.fragments)


@contextlib.contextmanager
def _without_log_messages(logger, *fragments):
    drop = _DropMessages(*fragments)
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _without_file_client_warnings(logger):
    """mmengine's CheckpointHook and checkpoint writer build a ``FileClient`` for backward
    compatibility, which logs deprecation warnings about mmengine's own code."""
    return _without_log_messages(logger, '"FileClient" will be deprecated',
                                 '"HardDiskBackend" is the alias of "LocalBackend"')


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):

    def before_train(self, runner):
        with _without_file_client_warnings(runner.logger):
            super().before_train(runner)

    def save_atomically(self, runner, filename, meta, save_optimizer=None,
                        save_param_scheduler=None, update_last_checkpoint=True):
        """Save ``out_dir/filename`` through a temporary name, then (optionally) point
        ``work_dir/last_checkpoint`` at it. Returns the path. Non-local backends are
        written by mmengine directly (no rename there)."""
        from mmengine.fileio import LocalBackend
        path = osp.join(self.out_dir, filename)
        local = isinstance(self.file_backend, LocalBackend)
        with _without_file_client_warnings(runner.logger):
            runner.save_checkpoint(
                self.out_dir, f'.{filename}.partial' if local else filename,
                self.file_client_args,
                save_optimizer=self.save_optimizer if save_optimizer is None else save_optimizer,
                save_param_scheduler=(self.save_param_scheduler if save_param_scheduler is None
                                      else save_param_scheduler),
                meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process() or not local:
            return path
        tmp_path = osp.join(self.out_dir, f'.{filename}.partial')
        with open(tmp_path, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        if update_last_checkpoint:
            _atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'), path)
        return path

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
        # a checkpoint written on SIGTERM (PreemptionCheckpointHook) is superseded by this one
        preempted = runner.message_hub.pop_info('preemption_ckpt', None)
        self.save_atomically(runner, ckpt_filename, meta)
        if not is_main_process():
            return

        stale = [osp.join(self.out_dir, self.filename_tmpl.format(dropped))] if dropped is not None else []
        if preempted and osp.abspath(preempted) != osp.abspath(self.last_ckpt):
            stale.append(preempted)
        for old in stale:
            if osp.isfile(old):
                os.remove(old)

    def _save_best_checkpoint(self, runner, metrics):
        """mmengine's, except that the new best is complete before the previous one goes."""
        from mmengine.fileio import LocalBackend
        if not self.save_best:
            return
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_best_checkpoint(runner, metrics)
        if self.by_epoch:
            cur_type, cur_time = 'epoch', runner.epoch
        else:
            cur_type, cur_time = 'iter', runner.iter
        ckpt_filename = self.filename_tmpl.format(cur_time)
        meta = dict(epoch=runner.epoch, iter=runner.iter)
        if 'auto' in self.key_indicators:
            self._init_rule(self.rules, [list(metrics.keys())[0]])

        best_ckpt_updated = False
        for key_indicator, rule in zip(self.key_indicators, self.rules):
            key_score = metrics[key_indicator]
            single = len(self.key_indicators) == 1
            best_score_key = 'best_score' if single else f'best_score_{key_indicator}'
            runtime_best_ckpt_key = 'best_ckpt' if single else f'best_ckpt_{key_indicator}'
            previous = self.best_ckpt_path if single else self.best_ckpt_path_dict[key_indicator]
            best_score = runner.message_hub.runtime_info.get(best_score_key,
                                                             self.init_value_map[rule])
            if key_score is None or not self.is_better_than[key_indicator](key_score, best_score):
                continue
            best_ckpt_updated = True
            best_score = key_score
            runner.message_hub.update_info(best_score_key, best_score)

            best_ckpt_name = f'best_{key_indicator}_{ckpt_filename}'.replace('/', '_')
            best_path = osp.join(self.out_dir, best_ckpt_name)
            if single:
                self.best_ckpt_path = best_path
            else:
                self.best_ckpt_path_dict[key_indicator] = best_path
            runner.message_hub.update_info(runtime_best_ckpt_key, best_path)
            self.save_atomically(runner, best_ckpt_name, meta, save_optimizer=False,
                                 save_param_scheduler=False, update_last_checkpoint=False)
            if (is_main_process() and previous and osp.abspath(previous) != osp.abspath(best_path)
                    and osp.isfile(previous)):
                os.remove(previous)
                runner.logger.info(f'The previous best checkpoint {previous} is removed')
            runner.logger.info(f'The best checkpoint with {best_score:0.4f} {key_indicator} '
                               f'at {cur_time} {cur_type} is saved to {best_ckpt_name}.')

        # as mmengine: save the last checkpoint again, so that it records the new best
        # (resuming from it then knows which best checkpoint to replace)
        if best_ckpt_updated and self.last_ckpt is not None:
            self._save_checkpoint_with_step(runner, cur_time, meta)
