"""MMEngine 0.10.7's unit tests of ``BaseModel`` (``tests/test_model/test_base_model/
test_base_model.py``) and ``BaseTTAModel`` (``tests/test_model/test_test_aug_time.py``),
rewritten for fengine.

Deliberate differences:
- A ``data_preprocessor`` of the wrong type raises ``TypeError`` with fengine's wording
  (``data_preprocessor must be a dict config or an nn.Module``).
- The preprocessor's device is its ``device`` property (read from an empty buffer that
  moves with the model), not MMEngine's ``_device`` attribute.
- ``BaseTTAModel`` copies a ``module`` config before adding ``data_preprocessor``
  (MMEngine writes into the caller's dict), and refuses a module without ``test_step``
  with ``TypeError`` (MMEngine: ``AssertionError``).
Skipped where no GPU exists: the CUDA device tests (marked ``cuda``).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim import SGD
from torch.utils.data import DataLoader

from fengine.evaluator import BaseMetric
from fengine.model import BaseDataPreprocessor, BaseModel, BaseTTAModel
from fengine.optim import OptimWrapper
from fengine.registry import MODELS
from fengine.runner import Runner
from fengine.runner.data import pseudo_collate

DTYPES = [torch.float16, torch.float32, torch.float64, torch.half]
DEVICES = ['cpu', torch.device('cpu')] + (
    ['cuda', 0, torch.device('cuda')] if torch.cuda.is_available() else [])


class CustomDataPreprocessor(BaseDataPreprocessor):

    def forward(self, data, training=False):
        return 1 if training else 2


class ToyModel(BaseModel):

    def __init__(self, data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=None)
        self.conv = nn.Conv2d(3, 1, 1)

    def forward(self, inputs, data_sample=None, mode='tensor'):
        out = self.conv(inputs)
        return dict(loss=out) if mode == 'loss' else out


class NestedModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.toy_model = ToyModel()


@pytest.fixture
def custom_preprocessor_registered():
    MODELS.register_module(module=CustomDataPreprocessor, force=True)
    yield
    MODELS._module_dict.pop('CustomDataPreprocessor', None)


def batch(device='cpu'):
    return dict(inputs=torch.randn(1, 3, 1, 1, device=device), data_sample=None)


def test_the_data_preprocessor_is_built_from_nothing_a_config_or_taken_as_given(
        custom_preprocessor_registered):
    assert isinstance(ToyModel().data_preprocessor, BaseDataPreprocessor)
    model = ToyModel(data_preprocessor=dict(type='CustomDataPreprocessor'))
    assert isinstance(model.data_preprocessor, CustomDataPreprocessor)
    assert model.data_preprocessor(1, training=True) == 1
    assert model.data_preprocessor(1, training=False) == 2
    given = CustomDataPreprocessor()
    assert ToyModel(data_preprocessor=given).data_preprocessor is given
    with pytest.raises(TypeError, match=r'data_preprocessor must be a dict config or an '
                                        r'nn.Module, but got list'):
        ToyModel(data_preprocessor=[given])


def test_parse_losses_sums_tensors_and_lists_and_refuses_other_values():
    model = ToyModel()
    losses = dict(loss_cls=torch.tensor(1.), loss_list=[torch.tensor(2.), torch.tensor(3.)])
    total, log_vars = model.parse_losses(losses)
    assert total.item() == 6
    assert {k: v.item() for k, v in log_vars.items()} == dict(loss=6, loss_cls=1, loss_list=5)
    losses['error_key'] = dict()
    with pytest.raises(TypeError, match=r"loss 'error_key' must be a tensor or a list of "
                                        r"tensors, but got dict"):
        model.parse_losses(losses)


def test_train_step_updates_the_parameters_and_logs_the_loss_tensor():
    model = ToyModel()
    before = model.conv.weight.clone()
    log_vars = model.train_step(batch(), OptimWrapper(SGD(model.parameters(), lr=0.1)))
    assert not torch.equal(before, model.conv.weight)
    assert isinstance(log_vars['loss'], torch.Tensor)


@pytest.mark.parametrize('step', ['val_step', 'test_step'])
def test_val_and_test_steps_return_the_predict_tensor(step):
    assert isinstance(getattr(ToyModel(), step)(batch()), torch.Tensor)


@pytest.mark.cuda
@pytest.mark.parametrize('move', [lambda m: m.cuda(), lambda m: m.to('cuda'),
                                  lambda m: m.to(torch.cuda.current_device())])
def test_moving_the_model_to_cuda_moves_every_preprocessor(move):
    assert move(ToyModel()).val_step(batch('cuda')).device.type == 'cuda'
    model = NestedModel()
    assert model.data_preprocessor.device == torch.device('cpu')
    move(model)
    model.to()
    assert model.data_preprocessor.device.type == 'cuda'
    assert model.toy_model.data_preprocessor.device.type == 'cuda'


@pytest.mark.parametrize('device', DEVICES)
def test_to_a_device_moves_parameters_and_the_preprocessor(device):
    model = ToyModel().to(device)
    assert all(p.device.type == torch.device(device).type for p in model.parameters())
    assert model.data_preprocessor.device.type == torch.device(device).type


@pytest.mark.parametrize('dtype', DTYPES)
def test_to_a_dtype_casts_the_parameters(dtype):
    assert all(p.dtype == dtype for p in ToyModel().to(dtype).parameters())


@pytest.mark.parametrize('mode', ['args', 'kwargs', 'hybrid'])
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('device', DEVICES)
def test_to_a_device_and_dtype_in_any_call_style(device, dtype, mode):
    model = ToyModel()
    if mode == 'args':
        model.to(device, dtype)
    elif mode == 'kwargs':
        model.to(device=device, dtype=dtype)
    else:
        model.to(device, dtype=dtype)
    assert all(p.dtype == dtype for p in model.parameters())
    assert all(p.device.type == torch.device(device).type for p in model.parameters())
    assert model.data_preprocessor.device.type == torch.device(device).type


# -- BaseTTAModel (MMEngine: tests/test_model/test_test_aug_time.py) ----------------------

class ToyTestTimeAugModel(BaseTTAModel):

    def merge_preds(self, data_samples_list):
        return [sum(x) for x in data_samples_list]


class EchoModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 1)

    def forward(self, inputs, data_samples, mode='tensor'):
        return data_samples


@pytest.fixture
def tta_registered():
    MODELS.register_module(module=ToyTestTimeAugModel, force=True)
    MODELS.register_module(module=EchoModel, force=True)
    yield
    MODELS._module_dict.pop('ToyTestTimeAugModel', None)
    MODELS._module_dict.pop('EchoModel', None)


def test_tta_test_step_merges_every_augmentation_of_dict_and_tuple_batches():
    tta = ToyTestTimeAugModel(EchoModel())
    dict_loader = DataLoader([dict(inputs=[1, 2], data_samples=[3, 4]) for _ in range(10)],
                             batch_size=2, collate_fn=pseudo_collate)
    tuple_loader = DataLoader([([1, 2], [3, 4]) for _ in range(10)], batch_size=2,
                              collate_fn=pseudo_collate)
    for loader in (dict_loader, tuple_loader):
        results = [tta.test_step(data) for data in loader]
        assert results == [[7, 7]] * 5
    # A tensor field holds the augmentations along its first dimension.
    assert tta.test_step(dict(inputs=torch.zeros(2, 3), data_samples=[[1, 2, 3], [4, 5, 6]])) \
        == [5, 7, 9]


def test_tta_wraps_a_module_or_builds_it_from_a_config(tta_registered):
    model = EchoModel()
    assert ToyTestTimeAugModel(model).module is model
    cfg = dict(type='EchoModel')
    assert isinstance(ToyTestTimeAugModel(cfg).module, EchoModel)
    assert cfg == dict(type='EchoModel')
    built = MODELS.build(dict(type='ToyTestTimeAugModel', module=dict(type='EchoModel')))
    assert isinstance(built, ToyTestTimeAugModel) and isinstance(built.module, EchoModel)


def test_tta_data_preprocessor_replaces_the_config_module_one(tta_registered,
                                                              custom_preprocessor_registered):
    class Preprocessed(EchoModel):
        def __init__(self, data_preprocessor=None):
            BaseModel.__init__(self, data_preprocessor=data_preprocessor)

    MODELS.register_module(module=Preprocessed, force=True)
    try:
        tta = ToyTestTimeAugModel(dict(type='Preprocessed'),
                                  data_preprocessor=dict(type='CustomDataPreprocessor'))
    finally:
        MODELS._module_dict.pop('Preprocessed', None)
    assert isinstance(tta.module.data_preprocessor, CustomDataPreprocessor)


def test_tta_refuses_what_it_cannot_wrap_or_split():
    with pytest.raises(TypeError, match='module must be an nn.Module or a model config dict, '
                                        'but got int: 3'):
        ToyTestTimeAugModel(3)
    with pytest.raises(TypeError, match='calls module.test_step, but Linear has none'):
        ToyTestTimeAugModel(nn.Linear(1, 1))
    tta = ToyTestTimeAugModel(EchoModel())
    with pytest.raises(ValueError, match=r"counts differ: \{'inputs': 2, 'data_samples': 3\}"):
        tta.test_step(dict(inputs=[1, 2], data_samples=[3, 4, 5]))
    with pytest.raises(TypeError, match='must be a dict, tuple or list .* but got Tensor'):
        tta.test_step(torch.zeros(2))
    with pytest.raises(NotImplementedError, match='runs through test_step'):
        tta(torch.zeros(1))
    with pytest.raises(TypeError, match='EchoModel.test_step must return one prediction per '
                                        'sample \\(a list\\), but for augmentation 0 it '
                                        'returned int'):
        tta.test_step(dict(inputs=[1], data_samples=[2]))
    with pytest.raises(NotImplementedError, match='must implement merge_preds'):
        BaseTTAModel(EchoModel()).test_step(dict(inputs=[1], data_samples=[[2]]))


class SumMetric(BaseMetric):
    default_prefix = 'tta'

    def process(self, data_batch, data_samples):
        self.results.extend(float(s) for s in data_samples)

    def compute_metrics(self, results):
        return dict(total=sum(results), n=len(results))


def test_a_runner_tests_a_tta_model(tmp_path):
    # Each of 12 samples has label 1 under one augmentation: merged, each predicts 1.
    data = [dict(inputs=[torch.randn(2)], data_samples=[torch.tensor(1.)]) for _ in range(12)]
    runner = Runner(model=ToyTestTimeAugModel(EchoModel()), work_dir=str(tmp_path),
                    test_dataloader=DataLoader(data, batch_size=4, collate_fn=pseudo_collate),
                    test_cfg=dict(), test_evaluator=SumMetric())
    assert runner.test() == {'tta/total': 12.0, 'tta/n': 12}
