import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'cuda: needs a CUDA GPU; skipped without one. On a GPU machine '
        '`pytest tests -m cuda` runs just these')


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs CUDA: no CUDA device here')
    for item in items:
        if item.get_closest_marker('cuda') is not None:
            item.add_marker(skip)


def _tiny_model():
    from mmengine.model import BaseModel

    class Regressor(BaseModel):

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 1)

        def forward(self, x, mode='loss'):
            out = self.fc(torch.stack(x) if isinstance(x, list) else x)
            return {'loss': out.pow(2).mean()} if mode == 'loss' else out

    return Regressor()


class _Points(Dataset):

    def __len__(self):
        return 16

    def __getitem__(self, i):
        return dict(x=torch.full((4, ), float(i)))


@pytest.fixture
def make_tiny_runner():
    """A Runner over a 4->1 linear model and 16 points, batch 4, AdamW; iteration based."""

    def make(work_dir, max_iters, resume=False, checkpoint=None):
        import mmmambaout  # noqa: F401  (patches, AtomicCheckpointHook)
        from mmengine.runner import Runner
        return Runner(
            model=_tiny_model(),
            work_dir=str(work_dir),
            train_dataloader=dict(
                dataset=_Points(), sampler=dict(type='DefaultSampler', shuffle=True),
                batch_size=4, collate_fn=dict(type='default_collate')),
            optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
            train_cfg=dict(by_epoch=False, max_iters=max_iters),
            default_hooks=dict(checkpoint=checkpoint or dict(
                type='CheckpointHook', interval=3, by_epoch=False)),
            resume=resume,
            randomness=dict(seed=0),
        )

    return make


@pytest.fixture(autouse=True)
def _no_default_scope_leaks():
    """Tests that set an mmengine default scope must not change how later tests build."""
    from mmengine.registry import DefaultScope
    before = set(DefaultScope._instance_dict)
    yield
    for name in list(DefaultScope._instance_dict):
        if name not in before:
            del DefaultScope._instance_dict[name]
