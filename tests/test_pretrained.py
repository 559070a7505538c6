"""``init_cfg=dict(type='Pretrained', ...)``: loading weights from checkpoints.

Covers local ``.pth`` and ``.safetensors`` files, http URLs served from 127.0.0.1 into a
temporary ``torch.hub`` cache, ``prefix``, ``map_location``, wrapped and DDP state dicts,
the ``weights_only`` safety default, mismatch reports, errors that leave the model as it
was, ordering and provenance, children with their own checkpoint, the functional path
and models built on ``meta``.
"""
from __future__ import annotations

import http.server
import logging
import os
import re
import socket
import threading
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from fengine.func import apply_plan, init_params, init_plan
from fengine.model import BaseModule, PretrainedInit, initialize


# -- models ---------------------------------------------------------------------------
class Backbone(BaseModule):

    def __init__(self, init_cfg=None):
        super().__init__(init_cfg)
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)


class Head(BaseModule):

    def __init__(self, init_cfg=None):
        super().__init__(init_cfg)
        self.fc = nn.Linear(4, 2)


class Detector(BaseModule):
    """backbone.conv, backbone.bn (with running stats), head.fc."""

    def __init__(self, init_cfg=None, backbone_cfg=None, head_cfg=None):
        super().__init__(init_cfg)
        self.backbone = Backbone(backbone_cfg)
        self.head = Head(head_cfg)


# Unpickling this runs _trip: the "arbitrary code" a weights_only load must refuse to run.
TRIPPED: list[str] = []


def _trip() -> str:
    TRIPPED.append('ran')
    return 'payload'


class Tripwire:

    def __reduce__(self):
        return (_trip, ())


# -- helpers --------------------------------------------------------------------------
def random_state(model: nn.Module, seed: int = 123) -> dict[str, torch.Tensor]:
    """A state dict for ``model`` whose values no initializer would produce."""
    gen = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=gen) if v.is_floating_point()
             else torch.full_like(v, 7)
             for k, v in model.state_dict().items()}
    for key in state:
        if key.endswith('running_var'):
            state[key] = state[key].abs() + 0.5  # a variance
    return state


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_state_equal(model: nn.Module, expected: dict[str, torch.Tensor],
                       keys=None) -> None:
    actual = model.state_dict()
    for key in (expected if keys is None else keys):
        assert actual[key].dtype == expected[key].dtype, key
        assert torch.equal(actual[key].cpu(), expected[key].cpu()), key


def assert_differs(model: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    """Guard: the model does not already hold the checkpoint's values."""
    actual = model.state_dict()
    for key, value in expected.items():
        if value.is_floating_point():
            assert not torch.equal(actual[key], value), key


_REPORT = re.compile(r'\n(?P<name>\S+) - torch\.Size\(\[[\d, ]*\]\):\n(?P<info>.*)\n',
                     re.S)


def report(log) -> dict[str, str]:
    """The per-parameter init report: parameter name -> what initialized it."""
    found = {}
    for message in log.messages(logging.INFO):
        match = _REPORT.fullmatch(message)
        if match:
            found[match['name']] = match['info']
    return found


def untouched(model_name: str) -> str:
    return f'The value is the same before and after calling `init_weights` of {model_name}'


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


# -- fixtures -------------------------------------------------------------------------
@pytest.fixture
def ckpt(tmp_path):
    """A Detector checkpoint saved from ``state_dict()``: its path and its values."""
    state = random_state(Detector())
    path = str(tmp_path / 'detector.pth')
    torch.save(state, path)
    return SimpleNamespace(path=path, state=state)


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """torch.hub's cache in a temporary TORCH_HOME, never the user's."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    # Keep urllib from sending 127.0.0.1 to a proxy configured in the environment.
    monkeypatch.setenv('no_proxy', '127.0.0.1,localhost')
    monkeypatch.setenv('NO_PROXY', '127.0.0.1,localhost')
    hub = torch.hub.get_dir()
    if not hub.startswith(str(tmp_path)):
        pytest.fail(f'torch.hub.get_dir() is {hub!r}, not under the test TORCH_HOME; '
                    'something called torch.hub.set_dir')
    return hub


@pytest.fixture
def http_server(tmp_path, hub_dir):
    """An HTTP server on 127.0.0.1 serving ``root``; ``requests`` lists every request."""
    root = tmp_path / 'www'
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):

        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def send_head(self):  # every GET and HEAD passes here
            requests.append(f'{self.command} {self.path}')
            return super().send_head()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(root=root, url=f'http://127.0.0.1:{server.server_port}',
                              requests=requests, hub=hub_dir)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- local .pth -----------------------------------------------------------------------
def test_pretrained_loads_a_local_pth_bit_for_bit_and_logs_where_from(ckpt, fengine_log):
    net = Detector(init_cfg=dict(type='Pretrained', checkpoint=ckpt.path))
    assert_differs(net, ckpt.state)

    net.init_weights()

    assert_state_equal(net, ckpt.state)  # parameters and BatchNorm buffers
    messages = fengine_log.messages(logging.INFO)
    assert f'load model from: {ckpt.path}' in messages
    assert f'local loads checkpoint from path: {ckpt.path}' in messages
    assert messages.index(f'load model from: {ckpt.path}') < messages.index(
        f'local loads checkpoint from path: {ckpt.path}')
    assert report(fengine_log) == {
        name: f'PretrainedInit: load from {ckpt.path}' for name, _ in net.named_parameters()}
    assert fengine_log.messages(logging.WARNING) == []
    assert net.is_init


def test_pretrained_initializer_called_directly_or_through_initialize_loads(ckpt):
    head_state = {k[len('head.'):]: v for k, v in ckpt.state.items() if k.startswith('head.')}
    path = os.path.join(os.path.dirname(ckpt.path), 'head.pth')
    torch.save(head_state, path)

    direct = Head()
    PretrainedInit(checkpoint=path)(direct)
    through_initialize = Head()
    initialize(through_initialize, dict(type='Pretrained', checkpoint=path))

    assert_state_equal(direct, head_state)
    assert_state_equal(through_initialize, head_state)


# -- URLs -----------------------------------------------------------------------------
def test_pretrained_downloads_an_http_url_once_into_the_hub_cache(ckpt, http_server,
                                                                  fengine_log):
    with open(ckpt.path, 'rb') as f:
        payload = f.read()
    (http_server.root / 'detector.pth').write_bytes(payload)
    url = f'{http_server.url}/detector.pth'

    first = Detector(init_cfg=dict(type='Pretrained', checkpoint=url))
    first.init_weights()

    assert_state_equal(first, ckpt.state)
    assert f'http loads checkpoint from url: {url}' in fengine_log.messages(logging.INFO)
    assert report(fengine_log)['head.fc.weight'] == f'PretrainedInit: load from {url}'
    cached = os.path.join(http_server.hub, 'checkpoints', 'detector.pth')
    with open(cached, 'rb') as f:
        assert f.read() == payload
    assert http_server.requests == ['GET /detector.pth']

    # The second load reads the cache: no request, even with the file gone from the server.
    (http_server.root / 'detector.pth').unlink()
    second = Detector(init_cfg=dict(type='Pretrained', checkpoint=url))
    second.init_weights()

    assert_state_equal(second, ckpt.state)
    assert http_server.requests == ['GET /detector.pth']


def test_a_url_the_server_does_not_have_raises_connection_error_and_caches_nothing(
        http_server):
    url = f'{http_server.url}/absent.pth'
    net = Detector(init_cfg=dict(type='Pretrained', checkpoint=url))
    before = snapshot(net)

    with pytest.raises(ConnectionError, match=re.escape(url)):
        net.init_weights()

    assert_state_equal(net, before)
    assert not os.path.exists(os.path.join(http_server.hub, 'checkpoints', 'absent.pth'))


# -- prefix ---------------------------------------------------------------------------
@pytest.mark.parametrize('prefix', ['backbone.', 'backbone'])
def test_prefix_loads_only_that_subtree_with_the_prefix_stripped(ckpt, prefix, fengine_log):
    # The checkpoint is the whole Detector (backbone.* and head.*); the model is a backbone.
    net = Backbone(init_cfg=dict(type='Pretrained', checkpoint=ckpt.path, prefix=prefix))
    expected = {k[len('backbone.'):]: v for k, v in ckpt.state.items()
                if k.startswith('backbone.')}

    net.init_weights()

    assert sorted(net.state_dict()) == sorted(expected)
    assert_state_equal(net, expected)
    assert fengine_log.messages(logging.WARNING) == []  # no head.* "unexpected keys"
    assert f'load {prefix} in model from: {ckpt.path}' in fengine_log.messages(logging.INFO)


def test_a_prefix_matching_nothing_raises_key_error_naming_it_and_the_prefixes_present(ckpt):
    net = Backbone(init_cfg=dict(type='Pretrained', checkpoint=ckpt.path, prefix='neck.'))
    before = snapshot(net)

    with pytest.raises(KeyError) as info:
        net.init_weights()

    message = info.value.args[0]
    assert "'neck.'" in message
    assert 'backbone.' in message and 'head.' in message
    assert_state_equal(net, before)


# -- map_location ---------------------------------------------------------------------
def test_map_location_function_is_called_for_every_storage(ckpt):
    locations = []

    def to_cpu(storage, location):
        locations.append(location)
        return storage

    net = Detector(init_cfg=dict(type='Pretrained', checkpoint=ckpt.path,
                                 map_location=to_cpu))
    net.init_weights()

    assert_state_equal(net, ckpt.state)
    assert len(locations) == len(ckpt.state)  # one storage per saved tensor
    assert set(locations) == {'cpu'}


def test_map_location_cpu_loads_in_the_functional_path(ckpt):
    net = Detector(init_cfg=dict(type='Pretrained', checkpoint=ckpt.path, map_location='cpu'))

    params = apply_plan(init_plan(net), seed=0).params

    for name, tensor in params.items():
        assert tensor.device == torch.device('cpu'), name
        assert torch.equal(tensor, ckpt.state[name]), name


@pytest.mark.cuda
def test_map_location_cuda_loads_into_a_cpu_model(ckpt):
    net = Detector(init_cfg=dict(type='Pretrained', checkpoint=ckpt.path,
                                 map_location='cuda'))

    params = apply_plan(init_plan(net), seed=0).params
    net.init_weights()

    assert_state_equal(net, ckpt.state)
    for name, tensor in params.items():
        assert tensor.device == torch.device('cpu'), name
        assert torch.equal(tensor, ckpt.state[name]), name


@pytest.mark.cuda
def test_map_location_cpu_loads_into_a_cuda_model(ckpt):
    net = Detector(init_cfg=dict(type='Pretrained', checkpoint=ckpt.path,
                                 map_location='cpu')).cuda()

    params = apply_plan(init_plan(net), seed=0).params
    net.init_weights()

    for name, tensor in params.items():
        assert tensor.device.type == 'cuda', name
    for name, tensor in net.state_dict().items():
        assert tensor.device.type == 'cuda', name
    assert_state_equal(net, ckpt.state)


# -- checkpoint layouts ---------------------------------------------------------------
@pytest.mark.parametrize('wrap', [
    pytest.param(lambda s: {'state_dict': s, 'meta': {'epoch': 3}}, id='state_dict'),
    pytest.param(lambda s: {'model': s, 'optimizer': {'lr': torch.tensor(0.1)}}, id='model'),
    pytest.param(lambda s: {f'module.{k}': v for k, v in s.items()}, id='ddp-module-prefix'),
    pytest.param(lambda s: {'state_dict': {f'module.{k}': v for k, v in s.items()}},
                 id='state_dict-with-ddp-prefix'),
])
def test_wrapped_and_ddp_checkpoints_load(ckpt, tmp_path, wrap, fengine_log):
    path = str(tmp_path / 'wrapped.pth')
    torch.save(wrap(ckpt.state), path)
    net = Detector(init_cfg=dict(type='Pretrained', checkpoint=path))

    net.init_weights()

    assert_state_equal(net, ckpt.state)
    assert fengine_log.messages(logging.WARNING) == []


def test_safetensors_files_load_bit_for_bit(ckpt, tmp_path, fengine_log):
    path = str(tmp_path / 'detector.safetensors')
    save_file(ckpt.state, path)
    net = Detector(init_cfg=dict(type='Pretrained', checkpoint=path))

    net.init_weights()

    assert_state_equal(net, ckpt.state)
    assert f'local loads checkpoint from path: {path}' in fengine_log.messages(logging.INFO)
    assert report(fengine_log)['backbone.conv.weight'] == f'PretrainedInit: load from {path}'


# -- safety ---------------------------------------------------------------------------
def test_a_checkpoint_with_pickled_objects_is_refused_unless_weights_only_is_false(
        ckpt, tmp_path):
    path = str(tmp_path / 'untrusted.pth')
    torch.save({'state_dict': ckpt.state, 'extra': Tripwire()}, path)
    TRIPPED.clear()
    net = Detector(init_cfg=dict(type='Pretrained', checkpoint=path))
    before = snapshot(net)

    with pytest.raises(RuntimeError) as info:
        net.init_weights()

    assert path in str(info.value)
    assert 'weights_only=False' in str(info.value)
    assert TRIPPED == []  # the pickled callable did not run
    assert_state_equal(net, before)
    assert not net.is_init

    trusted = Detector(init_cfg=dict(type='Pretrained', checkpoint=path, weights_only=False))
    trusted.init_weights()

    assert TRIPPED == ['ran']
    assert_state_equal(trusted, ckpt.state)


# -- mismatches -----------------------------------------------------------------------
def test_missing_unexpected_and_mismatched_keys_are_warned_by_name_and_the_rest_loads(
        ckpt, tmp_path, fengine_log):
    state = dict(ckpt.state)
    del state['head.fc.bias']
    state['head.extra.weight'] = torch.ones(3)
    state['backbone.conv.weight'] = torch.ones(5, 3, 3, 3)
    path = str(tmp_path / 'partial.pth')
    torch.save(state, path)
    net = Detector(init_cfg=dict(type='Pretrained', checkpoint=path))
    before = snapshot(net)

    net.init_weights()

    warning = '\n'.join(fengine_log.messages(logging.WARNING))
    assert 'head.fc.bias' in warning  # missing
    assert 'head.extra.weight' in warning  # unexpected
    assert 'backbone.conv.weight' in warning and '(5, 3, 3, 3)' in warning  # mismatched
    assert '(4, 3, 3, 3)' in warning
    loaded = [k for k in ckpt.state if k not in ('head.fc.bias', 'backbone.conv.weight')]
    assert_state_equal(net, ckpt.state, keys=loaded)
    assert_state_equal(net, before, keys=['head.fc.bias', 'backbone.conv.weight'])
    infos = report(fengine_log)
    assert infos['backbone.conv.weight'] == untouched('Detector')
    assert infos['head.fc.bias'] == untouched('Detector')
    assert infos['head.fc.weight'] == f'PretrainedInit: load from {path}'


# -- failures leave the model as it was -----------------------------------------------
def _write_truncated(tmp_path, ckpt):
    path = str(tmp_path / 'truncated.pth')
    with open(ckpt.path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    return path


def _write_truncated_safetensors(tmp_path, ckpt):
    path = str(tmp_path / 'truncated.safetensors')
    save_file(ckpt.state, path)
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    return path


def _write_untrusted(tmp_path, ckpt):
    path = str(tmp_path / 'untrusted.pth')
    torch.save({'state_dict': ckpt.state, 'extra': Tripwire()}, path)
    return path


FAILURES = {
    # id: (make the checkpoint argument, extra Pretrained args, error, text in the message)
    'missing-file': (lambda tmp, c: str(tmp / 'nope.pth'), {}, FileNotFoundError, 'nope.pth'),
    'unreachable-url': (lambda tmp, c: f'http://127.0.0.1:{closed_port()}/x.pth', {},
                        ConnectionError, 'http://127.0.0.1:'),
    'truncated-pth': (_write_truncated, {}, RuntimeError, 'truncated.pth'),
    'truncated-safetensors': (_write_truncated_safetensors, {}, RuntimeError,
                              'truncated.safetensors'),
    'refused-pickle': (_write_untrusted, {}, RuntimeError, 'weights_only=False'),
    'prefix-matching-nothing': (lambda tmp, c: c.path, {'prefix': 'neck.'}, KeyError,
                                'neck.'),
}


@pytest.mark.parametrize('failure', list(FAILURES))
def test_a_failed_load_raises_before_any_write_even_with_other_initializers(
        failure, ckpt, tmp_path, hub_dir):
    make, extra, error, text = FAILURES[failure]
    checkpoint = make(tmp_path, ckpt)
    net = Detector(
        init_cfg=[dict(type='Kaiming', layer='Conv2d'),
                  dict(type='Pretrained', checkpoint=checkpoint, **extra)],
        backbone_cfg=dict(type='Constant', val=2, layer='BatchNorm2d'),
        head_cfg=dict(type='Constant', val=3, layer='Linear'))
    before = snapshot(net)

    with pytest.raises(error) as info:
        net.init_weights()

    message = info.value.args[0] if error is KeyError else str(info.value)
    assert text in message
    if failure in ('missing-file', 'unreachable-url'):
        assert checkpoint in message
    assert_state_equal(net, before)
    assert not (net.is_init or net.backbone.is_init or net.head.is_init)


def test_a_failed_load_can_be_retried_once_the_file_exists(ckpt, tmp_path):
    path = str(tmp_path / 'later.pth')
    net = Detector(init_cfg=[dict(type='Kaiming', layer='Conv2d'),
                             dict(type='Pretrained', checkpoint=path)],
                   head_cfg=dict(type='Constant', val=3, layer='Linear'))
    with pytest.raises(FileNotFoundError):
        net.init_weights()

    torch.save(ckpt.state, path)
    net.init_weights()

    assert_state_equal(net, ckpt.state)


@pytest.mark.parametrize('content', [
    pytest.param(None, id='truncated-zip'),
    pytest.param(b'', id='empty'),
    pytest.param(b'<!DOCTYPE html><html><body>404 Not Found</body></html>\n', id='html-page'),
    pytest.param(b'hello, this is not a checkpoint\n', id='text'),
])
def test_a_corrupt_file_raises_runtime_error_naming_it_and_saying_it_is_corrupt(
        ckpt, tmp_path, content):
    path = str(tmp_path / 'corrupt.pth')
    if content is None:
        with open(ckpt.path, 'rb') as f:
            content = f.read()[:-100]
    with open(path, 'wb') as f:
        f.write(content)
    net = Detector(init_cfg=dict(type='Pretrained', checkpoint=path))
    before = snapshot(net)

    with pytest.raises(RuntimeError) as info:
        net.init_weights()

    message = str(info.value)
    assert path in message
    assert 'corrupt' in message
    # A damaged file is not an untrusted one: do not advise turning the safety off.
    assert 'pass weights_only=False' not in message
    assert_state_equal(net, before)


# -- ordering and provenance ----------------------------------------------------------
def test_pretrained_applies_last_even_when_listed_first(ckpt, fengine_log):
    net = Detector(init_cfg=[dict(type='Pretrained', checkpoint=ckpt.path),
                             dict(type='Constant', val=5, layer='Linear')])

    net.init_weights()

    assert_state_equal(net, ckpt.state)
    infos = report(fengine_log)
    assert infos['head.fc.weight'] == f'PretrainedInit: load from {ckpt.path}'
    assert infos['head.fc.bias'] == f'PretrainedInit: load from {ckpt.path}'


def test_parameters_the_checkpoint_lacks_keep_and_report_the_other_initializer(
        ckpt, tmp_path, fengine_log):
    state = {k: v for k, v in ckpt.state.items() if not k.startswith('head.')}
    path = str(tmp_path / 'backbone_only.pth')
    torch.save(state, path)
    net = Detector(init_cfg=[dict(type='Pretrained', checkpoint=path),
                             dict(type='Constant', val=5, layer='Linear')])

    net.init_weights()

    assert_state_equal(net, state)
    assert torch.equal(net.head.fc.weight, torch.full((2, 4), 5.0))
    assert torch.equal(net.head.fc.bias, torch.zeros(2))
    infos = report(fengine_log)
    assert infos['head.fc.weight'] == 'ConstantInit: val=5, bias=0'
    assert infos['head.fc.bias'] == 'ConstantInit: val=5, bias=0'
    assert infos['backbone.conv.weight'] == f'PretrainedInit: load from {path}'


# -- children -------------------------------------------------------------------------
@pytest.mark.parametrize('layout', ['head-only-file', 'whole-model-file-with-prefix'])
def test_a_child_with_its_own_pretrained_loads_keys_relative_to_itself(
        ckpt, tmp_path, layout, fengine_log):
    head_state = {k[len('head.'):]: v for k, v in ckpt.state.items() if k.startswith('head.')}
    if layout == 'head-only-file':
        path = str(tmp_path / 'head.pth')
        torch.save(head_state, path)  # keys fc.weight, fc.bias
        head_cfg = dict(type='Pretrained', checkpoint=path)
    else:
        path = ckpt.path
        head_cfg = dict(type='Pretrained', checkpoint=path, prefix='head.')
    net = Detector(init_cfg=dict(type='Constant', val=5, layer='Linear'), head_cfg=head_cfg)
    backbone_before = snapshot(net.backbone)

    net.init_weights()

    assert_state_equal(net.head, head_state)
    assert_state_equal(net.backbone, backbone_before)
    assert fengine_log.messages(logging.WARNING) == []
    infos = report(fengine_log)
    assert infos['head.fc.weight'] == f'PretrainedInit: load from {path}'
    assert infos['backbone.conv.weight'] == untouched('Detector')


# -- functional path ------------------------------------------------------------------
def test_init_params_returns_the_checkpoint_values_without_touching_the_model(ckpt):
    net = Detector(init_cfg=dict(type='Pretrained', checkpoint=ckpt.path))
    before = snapshot(net)

    params = init_params(net, seed=0)
    result = apply_plan(init_plan(net), seed=0)

    assert sorted(params) == sorted(name for name, _ in net.named_parameters())
    for name, tensor in params.items():
        assert torch.equal(tensor, ckpt.state[name]), name
        assert tensor.data_ptr() != net.get_parameter(name).data_ptr(), name
    assert result.info['head.fc.weight'] == f'PretrainedInit: load from {ckpt.path}'
    for name in ('backbone.bn.running_mean', 'backbone.bn.running_var'):
        assert torch.equal(result.buffers[name], ckpt.state[name]), name
    assert_state_equal(net, before)
    assert not net.is_init


# -- meta -----------------------------------------------------------------------------
def test_a_model_built_on_meta_is_materialized_with_the_checkpoint_values(ckpt, fengine_log):
    with torch.device('meta'):
        net = Detector(init_cfg=dict(type='Pretrained', checkpoint=ckpt.path))
    assert all(t.is_meta for t in net.state_dict().values())

    net.init_weights(device='cpu')

    for name, tensor in net.state_dict().items():
        assert tensor.device == torch.device('cpu'), name
    assert_state_equal(net, ckpt.state)  # including BatchNorm's running stats
    assert report(fengine_log) == {
        name: f'PretrainedInit: load from {ckpt.path}' for name, _ in net.named_parameters()}
    net.eval()
    features = net.backbone.bn(net.backbone.conv(torch.ones(1, 3, 3, 3))).flatten(1)
    assert torch.isfinite(net.head.fc(features)).all()  # real storage, usable at once
