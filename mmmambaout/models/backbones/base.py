"""What our backbones share as OpenMMLab backbones: the arch-table lookup (a name, an
alias or a custom dict), the argument checks both make (output indices, frozen stages,
drop-path rate), freezing (applied at construction and re-applied in ``train()``), and
``init_weights`` dispatching to pretrained loading (:mod:`mmmambaout.checkpoint`). Each
backbone keeps what is its own: the arch validation, which modules freeze, its
from-scratch init and how a checkpoint's weights become its state dict.
"""
from typing import Optional

from mmengine.model import BaseModule

from mmmambaout.checkpoint import load_converted_state_dict


class ArchBackbone(BaseModule):
    #: arch name -> settings dict; alias -> arch name; how a custom dict looks (errors)
    arch_settings: dict = {}
    arch_aliases: dict = {}
    custom_arch_keys: str = ''
    #: regex of the keys a pretrained checkpoint may lack (initialised from scratch, logged
    #: at INFO level only)
    pretrained_missing_ok: Optional[str] = None

    @classmethod
    def _lookup_arch(cls, arch) -> dict:
        """The settings dict of ``arch`` (a name or alias), or ``arch`` itself if a dict."""
        if isinstance(arch, str):
            name = cls.arch_aliases.get(arch.lower(), arch.lower())
            if name not in cls.arch_settings:
                raise ValueError(f'unknown {cls.__name__} arch {arch!r}; valid archs: '
                                 f'{", ".join(cls.arch_settings)} (aliases '
                                 f'{", ".join(cls.arch_aliases)}), or a dict with '
                                 f'{cls.custom_arch_keys}')
            arch = cls.arch_settings[name]
        if not isinstance(arch, dict):
            raise TypeError(f'arch must be a str or a dict, got {type(arch).__name__}')
        return arch

    # -- argument checks ----------------------------------------------------------------
    @staticmethod
    def _normalise_out_indices(out_indices, num: int) -> list:
        """Each entry of ``out_indices`` in ``[0, num)`` (negative ones count from the end);
        ValueError for anything else."""
        indices = []
        for idx in out_indices:
            if not isinstance(idx, int) or not -num <= idx < num:
                raise ValueError(f'out_indices entries must be ints in [{-num}, {num - 1}], '
                                 f'got {out_indices!r}')
            indices.append(idx % num)
        return indices

    @staticmethod
    def _check_frozen_stages(frozen_stages: int, num: int):
        if not -1 <= frozen_stages <= num:
            raise ValueError(f'frozen_stages must be in [-1, {num}], got {frozen_stages}')

    @staticmethod
    def _check_drop_path_rate(drop_path_rate: float):
        if not 0. <= drop_path_rate < 1.:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate}')

    # -- freezing -----------------------------------------------------------------------
    def _frozen_modules(self):
        """Modules ``frozen_stages`` freezes: kept in eval mode, no gradients."""
        return ()

    def _frozen_parameters(self):
        """Parameters outside :meth:`_frozen_modules` that ``frozen_stages`` freezes."""
        return ()

    def _freeze_stages(self):
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False
        for p in self._frozen_parameters():
            p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        return self

    # -- initialisation -----------------------------------------------------------------
    def init_weights(self):
        if self.init_cfg is not None and self.init_cfg.get('type') == 'Pretrained':
            checkpoint = self.init_cfg.get('checkpoint')
            if checkpoint is None:
                raise ValueError("init_cfg type='Pretrained' needs a 'checkpoint'")
            self._load_pretrained(checkpoint, self.init_cfg.get('prefix'))
            self._freeze_stages()
            return
        self._init_from_scratch()
        if self.init_cfg is not None:
            super().init_weights()

    def _init_from_scratch(self):
        """Weights without a checkpoint; runs before any other ``init_cfg``."""

    def _load_pretrained(self, checkpoint, prefix):
        state_dict = self._pretrained_state_dict(checkpoint, prefix)
        load_converted_state_dict(self, state_dict, checkpoint,
                                  expected_missing=self.pretrained_missing_ok)

    def _pretrained_state_dict(self, checkpoint, prefix) -> dict:
        """The weights of ``checkpoint`` (under ``prefix``) for this backbone, with its own
        key names; keys it does not have are reported as unexpected."""
        raise NotImplementedError
