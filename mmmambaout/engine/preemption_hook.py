"""SIGTERM (what slurm and other schedulers send before preemption): save a checkpoint at
the next iteration boundary, exit, and let ``--resume`` continue at exactly that
iteration with the losses an uninterrupted run would have had.

On SIGTERM the hook only sets a flag; after the current iteration (all its hooks done) it
saves ``iter_<N>.pth`` through :meth:`AtomicCheckpointHook.save_atomically` (temporary
name, rename, ``last_checkpoint`` moved last), logs one line with the path and the resume
command, and exits with status 143 (what a shell reports for a process ended by SIGTERM,
so that ``train && test`` chains stop). A second SIGTERM before then terminates at once.
Under several processes, every rank stops at the same iteration (the flag is summed over
ranks after each iteration).

Exact resume, for every checkpoint written while this hook is registered:

* the checkpoint records the iteration and, for epoch-based loops, how many batches of the
  current epoch are done (``meta['epoch_iter']`` of ``meta['epoch_len']``), the sampler's
  seed, and the random states of the training process (Python, NumPy, torch, CUDA);
* on resume mid-epoch, mmengine's ``EpochBasedTrainLoop`` would run the whole epoch again
  (it resumes at epoch boundaries); here the batch sampler skips the batches of that epoch
  that were trained, without loading them, with the sampler seeded as before, and the
  batch indices seen by hooks and logs continue where they stopped;
* iteration-based loops skip the trained batches the same way, instead of mmengine's
  loading and discarding every one of them;
* the random states are restored just before the first batch after the resume is
  loaded, and validation runs with the training process' random states set aside, so
  that it does not shift them.

What stays inexact: random augmentations drawn inside dataloader worker processes
(``num_workers > 0``); the workers are started afresh on resume, with mmengine's seeds. With
``num_workers=0`` resumed losses equal those of an uninterrupted run on the CPU. Under
several processes the random states saved are those of rank 0.
"""
import logging
import os
import random
import signal
import sys
import threading

import numpy as np
import torch
from mmengine.dist import all_reduce, barrier, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

EXIT_STATUS = 128 + signal.SIGTERM


def _rng_state():
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = dict(python=random.getstate(),
                 numpy=(kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    version, internal, gauss_next = state['python']
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state['numpy']
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state['torch'].cpu())
    if 'cuda' in state and torch.cuda.is_available():
        cuda = [s.cpu() for s in state['cuda']]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


class _SkippingBatchSampler:
    """The wrapped batch sampler, except that its first iteration skips ``skip`` batches
    (index lists only: nothing is loaded) and first calls ``on_start``. Iterations after
    the first pass through."""

    def __init__(self, batch_sampler, skip, on_start=None):
        self.batch_sampler = batch_sampler
        self.skip = skip
        self.on_start = on_start

    def __getattr__(self, name):  # sampler, batch_size, drop_last, ...
        if name == 'batch_sampler':
            raise AttributeError(name)
        return getattr(self.batch_sampler, name)

    def __len__(self):
        return len(self.batch_sampler)

    def __iter__(self):
        skip, on_start = self.skip, self.on_start
        self.skip, self.on_start = 0, None
        if on_start is not None:
            on_start()
        it = iter(self.batch_sampler)
        for _ in range(skip):
            next(it)
        yield from it


def _batch_sampler_skipping(loader, skip, on_start):
    """Make ``loader`` skip ``skip`` batches on its next iteration. The DataLoader forbids
    setting ``batch_sampler`` after it is built, hence ``object.__setattr__``; a
    persistent worker iterator keeps the wrapper, which then passes through."""
    if loader.batch_sampler is None:
        raise RuntimeError('exact resume needs a DataLoader with a batch sampler')
    wrapped = _SkippingBatchSampler(loader.batch_sampler, skip, on_start)
    object.__setattr__(loader, 'batch_sampler', wrapped)
    iterator = getattr(loader, '_iterator', None)  # a persistent workers' iterator
    if iterator is not None:
        iterator._index_sampler = wrapped


def _sampler_of(loader):
    sampler = loader.batch_sampler.sampler if loader.batch_sampler is not None else None
    return sampler if sampler is not None else loader.sampler


@HOOKS.register_module()
class PreemptionCheckpointHook(Hook):
    """On SIGTERM, save a checkpoint at the next iteration boundary and exit; resume exactly.

    Needs ``default_hooks.checkpoint`` to be an ``AtomicCheckpointHook`` (it saves through
    it). See the module docstring for what is saved and how resuming is made exact.

    Args:
        signals (tuple): the signals that stop the run this way.
    """

    # after every other hook of an iteration (the logger, the param scheduler step and a
    # regular checkpoint of the same iteration are done when it saves)
    priority = 'LOWEST'

    def __init__(self, signals=('SIGTERM', )):
        self.signals = tuple(getattr(signal, s) if isinstance(s, str) else s for s in signals)
        self._requested = False
        self._previous_handlers = {}
        self._training = False
        self._batch_idx = None  # the batch of the epoch being trained, between its hooks
        self._resume = None  # what the resumed checkpoint recorded
        self._validation_rng = None  # the training random states, set aside while validating
        self._on_epoch_start = None

    # -- signals ---------------------------------------------------------------------------

    def _on_signal(self, signum, frame):
        self._requested = True
        # a second signal ends the process at once, as without this hook
        signal.signal(signum, self._previous_handlers.get(signum, signal.SIG_DFL))

    def _install_handlers(self, runner):
        if threading.current_thread() is not threading.main_thread():
            runner.logger.warning('PreemptionCheckpointHook: training runs outside the main '
                                  'thread, where Python cannot handle signals: SIGTERM '
                                  'will end the run without a checkpoint')
            return
        for signum in self.signals:
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_handlers(self):
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous_handlers = {}

    def _stop_requested(self):
        if get_world_size() == 1:
            return self._requested
        flag = torch.tensor([1 if self._requested else 0], dtype=torch.int64)
        all_reduce(flag)  # every rank stops after the same iteration
        return bool(flag.item())

    # -- training --------------------------------------------------------------------------

    def _checkpoint_hook(self, runner):
        from .checkpoint_hook import AtomicCheckpointHook
        for hook in runner.hooks:
            if isinstance(hook, AtomicCheckpointHook):
                return hook
        raise RuntimeError('PreemptionCheckpointHook saves through AtomicCheckpointHook: set '
                           "default_hooks.checkpoint=dict(type='AtomicCheckpointHook', ...)")

    def before_train(self, runner):
        self._checkpoint_hook(runner)  # fail before training, not on SIGTERM
        self._training = True
        self._requested = False
        self._install_handlers(runner)
        if runner.iter > 0 and self._resume is not None and self._epoch_based(runner):
            self._prepare_exact_resume(runner)  # before the loop's run_epoch

    def after_train(self, runner):
        self._training = False
        self._restore_handlers()

    def before_train_epoch(self, runner):
        # iteration-based: after every other before_train_epoch hook (the sampler's
        # epoch is set), and before the loop advances its iterator
        if runner.iter > 0 and self._resume is not None:
            self._prepare_exact_resume(runner)
        action, self._on_epoch_start = self._on_epoch_start, None
        if action is not None:
            action()

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._batch_idx = batch_idx

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        try:
            if self._stop_requested():
                self._save_and_exit(runner)
        finally:
            self._batch_idx = None

    def _save_and_exit(self, runner):
        hook = self._checkpoint_hook(runner)
        filename = f'iter_{runner.iter + 1}.pth'
        path = os.path.join(hook.out_dir, filename)
        if hook.last_ckpt is None or os.path.abspath(hook.last_ckpt) != os.path.abspath(path):
            # (else the checkpoint hook has just saved this very iteration, under this name)
            runner.message_hub.update_info('preemption_ckpt', path)  # removed once superseded
            hook.save_atomically(runner, filename, dict(epoch=runner.epoch, iter=runner.iter + 1))
        barrier()  # rank 0 has written it before any process exits
        where = f'iteration {runner.iter + 1}'
        if self._epoch_based(runner):
            where += (f' (epoch {runner.epoch + 1}, batch {self._batch_idx + 1} of '
                      f'{len(runner.train_loop.dataloader)})')
        from mmmambaout.utils.cli_base import display_path, resume_command
        command = resume_command(sys.argv[1:], runner.work_dir)
        runner.logger.info(f'SIGTERM: saved {display_path(path)} at {where}; resume with: {command}')
        self._restore_handlers()
        runner.call_hook('after_run')  # closes the visualizer (flushes TensorBoard)
        raise SystemExit(EXIT_STATUS)

    @staticmethod
    def _epoch_based(runner):
        from mmengine.runner import EpochBasedTrainLoop
        return isinstance(runner.train_loop, EpochBasedTrainLoop)

    # -- what a checkpoint records ---------------------------------------------------------

    def before_save_checkpoint(self, runner, checkpoint):
        if not self._training:
            return
        meta = checkpoint['meta']
        loader = runner.train_loop.dataloader
        if self._batch_idx is not None and self._epoch_based(runner):
            # saved during an iteration (this hook's, or a CheckpointHook(by_epoch=False)):
            # meta['epoch'] is the epoch in progress, this many of its batches are done
            meta['epoch_iter'] = self._batch_idx + 1
            meta['epoch_len'] = len(loader)
        sampler = _sampler_of(loader)
        if getattr(sampler, 'seed', None) is not None:
            meta['sampler_seed'] = sampler.seed
        # during validation (a best checkpoint, and the re-save after it) the training
        # states are the ones set aside when validation started
        checkpoint['rng_state'] = self._validation_rng or _rng_state()

    def after_load_checkpoint(self, runner, checkpoint):
        meta = checkpoint.get('meta', {})
        self._resume = dict(rng_state=checkpoint.get('rng_state'),
                            sampler_seed=meta.get('sampler_seed'),
                            epoch_iter=meta.get('epoch_iter', 0), epoch_len=meta.get('epoch_len'))

    def before_val(self, runner):
        if self._training:
            self._validation_rng = _rng_state()

    def after_val(self, runner):
        if self._training and self._validation_rng is not None:
            _set_rng_state(self._validation_rng)
            self._validation_rng = None

    # -- resuming --------------------------------------------------------------------------

    def _prepare_exact_resume(self, runner):
        info, self._resume = self._resume, None
        loop = runner.train_loop
        sampler = _sampler_of(loop.dataloader)
        if info['sampler_seed'] is not None and hasattr(sampler, 'seed'):
            sampler.seed = info['sampler_seed']  # the run's seed, not this process' new one
        rng_state = info['rng_state']
        restore = None
        # under several processes the saved states are rank 0's: set them on every rank
        # only where mmengine seeds every rank alike
        if rng_state is not None and (get_world_size() == 1 or
                                      not runner._randomness_cfg.get('diff_rank_seed')):
            def restore():
                _set_rng_state(rng_state)

        from mmengine.runner import IterBasedTrainLoop
        if isinstance(loop, IterBasedTrainLoop):
            self._fast_forward_iter_based(runner, loop, restore)
        elif self._epoch_based(runner):
            self._resume_mid_epoch(runner, loop, info, restore)
        elif restore is not None:
            self._on_epoch_start = restore

    def _resume_mid_epoch(self, runner, loop, info, restore):
        from mmengine.runner import EpochBasedTrainLoop
        done, length = info['epoch_iter'], info['epoch_len']
        loader = loop.dataloader
        if done and length != len(loader):
            raise RuntimeError(
                f'the checkpoint was saved after batch {done} of an epoch of {length} batches, '
                f'but an epoch now has {len(loader)} (another batch size or number of '
                'processes?): cannot resume it exactly')
        if done and type(loop).run_epoch is not EpochBasedTrainLoop.run_epoch:
            raise RuntimeError(f'{type(loop).__name__} has its own run_epoch: '
                               'PreemptionCheckpointHook cannot resume it mid-epoch')
        # In an uninterrupted run, making an epoch's DataLoader iterator draws one number
        # of torch's generator (its workers' base seed), except for a persistent workers'
        # iterator after its first epoch. Mid-epoch that draw came before the checkpoint,
        # at an epoch boundary after it: restore the states after it, or before it.
        persistent = loader.persistent_workers and loader.num_workers > 0
        if restore is not None and not done and not persistent:
            self._on_epoch_start = restore  # this is before_train_epoch: before the draw
            restore = None
        if done or restore is not None:
            _batch_sampler_skipping(loader, done, restore)  # restores on its first batch
        if not done:
            return

        def run_epoch():  # EpochBasedTrainLoop.run_epoch, batch indices from `done` on
            del loop.run_epoch  # the following epochs are whole
            runner.call_hook('before_train_epoch')
            runner.model.train()
            for idx, data_batch in enumerate(loop.dataloader, start=done):
                loop.run_iter(idx, data_batch)
            runner.call_hook('after_train_epoch')
            loop._epoch += 1

        loop.run_epoch = run_epoch
        runner.logger.info(f'resuming epoch {runner.epoch + 1} after batch {done} of '
                           f'{length}: the trained batches are skipped, not loaded')

    def _fast_forward_iter_based(self, runner, loop, restore):
        """IterBasedTrainLoop.run advances its iterator ``iter`` times, loading every batch
        trained already. Give it an iterator whose first ``iter`` items are placeholders,
        followed by the batches of a fresh iterator that skips them unloaded."""
        from mmengine.dataset import InfiniteSampler
        from mmengine.runner.loops import _InfiniteDataloaderIterator
        loader = loop.dataloader
        done = runner.iter
        sampler = _sampler_of(loader)
        finite = not isinstance(sampler, InfiniteSampler)
        epoch, skip = divmod(done, len(loader)) if finite else (0, done)
        if not finite:
            sampler.indices = sampler._indices_of_rank()  # from its (restored) seed
        elif hasattr(sampler, 'set_epoch'):
            sampler.set_epoch(epoch)
        if getattr(loader, '_iterator', None) is not None:  # persistent workers
            loader._iterator._shutdown_workers()  # they prefetched in a fresh run's order
            loader._iterator = None
        persistent = loader.persistent_workers and loader.num_workers > 0
        if restore is not None and finite and epoch > 0 and not skip and not persistent:
            restore()  # as in an uninterrupted run, before the new epoch's iterator
            restore = None
        _batch_sampler_skipping(loader, skip, restore)
        fresh = _InfiniteDataloaderIterator(loader)
        fresh._epoch = epoch
        loop.dataloader_iterator = _AfterPlaceholders(fresh, done)
        # mmengine then warns that it advances the loader, but nothing is loaded
        runner.logger.addFilter(_DropOnce(runner.logger, 'that has already been trained'))


class _DropOnce(logging.Filter):

    def __init__(self, logger, fragment):
        super().__init__()
        self.logger, self.fragment = logger, fragment

    def filter(self, record):
        if self.fragment in record.getMessage():
            self.logger.removeFilter(self)
            return False
        return True


class _AfterPlaceholders:

    def __init__(self, iterator, placeholders):
        self.iterator = iterator
        self.placeholders = placeholders

    def __iter__(self):
        return self

    def __next__(self):
        if self.placeholders:
            self.placeholders -= 1
            return None
        return next(self.iterator)
