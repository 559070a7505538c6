"""BaseModel: modes, batch unpacking, parse_losses, the eager steps, the seed's examples."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim import SGD

from fengine.model import BaseModel
from seed_models import NeuralNetwork
from fengine.model.base_model import parse_losses
from fengine.model.data_preprocessor import BaseDataPreprocessor
from fengine.optim import OptimWrapper


class NeuralNetwork1(NeuralNetwork):
    """The seed's simplified steps with a custom data preprocessor."""

    def __init__(self, data_preprocessor):
        super().__init__(data_preprocessor=data_preprocessor)
        self.data_preprocessor = data_preprocessor

    def train_step(self, data, optimizer):
        img, label = self.data_preprocessor(data)
        loss = self(img, label, mode='loss')['loss'].sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return dict(loss=loss)

    def test_step(self, data):
        img, label = self.data_preprocessor(data)
        return self(img, label, mode='predict')

    def val_step(self, data):
        img, label = self.data_preprocessor(data)
        return self(img, label, mode='predict')


class NormalizeDataPreprocessor(BaseDataPreprocessor):

    def forward(self, data, training=False):
        img, label = [item for item in data]
        img = (img - 127.5) / 127.5
        return img, label


def test_seed_data_preprocessor_example_runs_as_documented():
    model = NeuralNetwork1(data_preprocessor=NormalizeDataPreprocessor())
    optimizer = SGD(model.parameters(), lr=0.01)
    data = (torch.full((3, 28, 28), fill_value=127.5), torch.ones(3, 10))
    assert set(model.train_step(data, optimizer)) == {'loss'}
    preds, loss = model.val_step(data)
    assert preds.shape == (3,) and isinstance(loss, float)
    test_preds, test_loss = model.test_step(data)
    assert torch.equal(preds, test_preds) and test_loss == loss


def test_train_step_matches_a_hand_written_loop():
    torch.manual_seed(0)
    model = NeuralNetwork()
    reference = NeuralNetwork()
    reference.load_state_dict(model.state_dict())
    wrapper = OptimWrapper(SGD(model.parameters(), lr=0.1, momentum=0.9))
    optimizer = SGD(reference.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        batch = (torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,)))
        log_vars = model.train_step(batch, wrapper)
        loss = reference(*batch, mode='loss')['loss']
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        assert torch.equal(log_vars['loss'], loss.detach())
    for a, b in zip(model.parameters(), reference.parameters()):
        assert torch.equal(a, b)


def test_dict_batches_are_passed_as_keywords():

    class Net(BaseModel):

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 1)

        def forward(self, inputs, targets, mode='tensor'):
            out = self.fc(inputs)
            if mode == 'loss':
                return dict(loss=(out - targets).pow(2).mean())
            return out

    net = Net()
    wrapper = OptimWrapper(SGD(net.parameters(), lr=0.1))
    log_vars = net.train_step(dict(inputs=torch.randn(4, 2), targets=torch.zeros(4, 1)),
                              wrapper)
    assert list(log_vars) == ['loss']
    assert net.val_step(dict(inputs=torch.randn(4, 2), targets=None)).shape == (4, 1)


def test_a_batch_of_another_type_is_a_clear_type_error():
    model = NeuralNetwork()
    with pytest.raises(TypeError, match=r'dict \(passed to forward as \*\*data\) or a tuple'
                                        r'.*returned Tensor'):
        model.val_step(torch.randn(2, 1, 28, 28))


def test_data_preprocessor_is_a_config_a_module_or_a_type_error():
    assert type(NeuralNetwork().data_preprocessor).__name__ == 'BaseDataPreprocessor'
    custom = NormalizeDataPreprocessor()
    assert NeuralNetwork(custom).data_preprocessor is custom
    built = NeuralNetwork(dict(type='ImgDataPreprocessor', mean=[0.5], std=[0.5]))
    assert type(built.data_preprocessor).__name__ == 'ImgDataPreprocessor'
    with pytest.raises(TypeError, match='must be a dict config or an nn.Module, but got str'):
        NeuralNetwork('BaseDataPreprocessor')


def test_forward_is_abstract():
    with pytest.raises(NotImplementedError, match=r"BaseModel must implement forward"):
        BaseModel()(torch.zeros(1))


def test_parse_losses_sums_the_loss_entries_and_logs_the_rest():
    losses = dict(loss_cls=torch.tensor([1.0, 3.0]), loss_bbox=[torch.tensor(1.0),
                                                                torch.tensor([2.0, 4.0])],
                  acc=torch.tensor(0.5))
    total, log_vars = parse_losses(losses)
    assert total.item() == 2.0 + 1.0 + 3.0
    assert list(log_vars) == ['loss', 'loss_cls', 'loss_bbox', 'acc']
    assert log_vars['acc'].item() == 0.5 and log_vars['loss'] is total


def test_parse_losses_names_a_bad_value_and_needs_a_loss():
    with pytest.raises(TypeError, match=r"loss 'loss_x' must be a tensor or a list of tensors"
                                        r", but got float"):
        parse_losses(dict(loss_x=1.0))
    with pytest.raises(ValueError, match=r"no key .* contains 'loss'.*\['acc'\]"):
        parse_losses(dict(acc=torch.tensor(1.0)))
    with pytest.raises(TypeError, match="must return a dict of losses, but returned Tensor"):
        parse_losses(torch.tensor(1.0))


def test_moving_the_model_moves_its_data_preprocessor():
    model = NeuralNetwork()
    assert model.data_preprocessor.device == torch.device('cpu')
    model.to('meta')
    assert model.data_preprocessor.device == torch.device('meta')
    model.to_empty(device='cpu')
    assert model.data_preprocessor.device == torch.device('cpu')


@pytest.mark.cuda
def test_cuda_and_cpu_keep_the_data_preprocessor_in_step():
    model = NeuralNetwork().cuda()
    assert model.data_preprocessor.device.type == 'cuda'
    batch = (torch.randn(2, 1, 28, 28), torch.randint(0, 10, (2,)))
    assert model.val_step(batch)[0].device.type == 'cuda'
    model.cpu()
    assert model.data_preprocessor.device.type == 'cpu'
