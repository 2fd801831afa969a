"""What our backbones share as OpenMMLab backbones: the arch-table lookup (a name, an
alias or a custom dict), freezing re-applied in ``train()``, and ``init_weights``
dispatching to pretrained loading. Each backbone keeps what is its own: the arch
validation, which modules freeze, its from-scratch init and its checkpoint conversion.
"""
from mmengine.model import BaseModule


class ArchBackbone(BaseModule):
    #: arch name -> settings dict; alias -> arch name; how a custom dict looks (errors)
    arch_settings: dict = {}
    arch_aliases: dict = {}
    custom_arch_keys: str = ''

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

    def _freeze_stages(self):
        raise NotImplementedError

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        return self

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
        raise NotImplementedError
