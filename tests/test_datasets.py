"""FashionMNIST, real when on disk or downloadable, synthetic and learnable otherwise."""
from __future__ import annotations

import gzip
import socket
import struct
import urllib.error
from pathlib import Path

import pytest
import torch

from fashion_mnist_files import RAW_FILES, write_fashion_mnist
from fengine.datasets import FASHION_MNIST_CLASSES, SyntheticFashionMNIST, load_fashion_mnist
from fengine.registry import DATASETS

torchvision = pytest.importorskip('torchvision')
from torchvision.datasets import FashionMNIST  # noqa: E402
from torchvision.datasets import mnist as tv_mnist  # noqa: E402
from torchvision.transforms import ToTensor  # noqa: E402

MIRROR_HOST = 'fashion-mnist.s3-website.eu-central-1.amazonaws.com'


@pytest.fixture
def no_download(monkeypatch):
    """Make torchvision's download fail as it does offline; record each attempt."""
    attempts = []

    def offline(url, *args, **kwargs):
        attempts.append((url, socket.getdefaulttimeout()))
        raise urllib.error.URLError('offline (test)')

    monkeypatch.setattr(tv_mnist, 'download_and_extract_archive', offline)
    return attempts


# -- the files tests write ---------------------------------------------------------------

def test_written_files_load_through_torchvision_without_downloading(tmp_path, no_download):
    write_fashion_mnist(tmp_path, n_train=300, n_test=50, seed=3)
    train = FashionMNIST(tmp_path, train=True, download=True)
    test = FashionMNIST(tmp_path, train=False, download=True)

    assert no_download == []
    assert train.data.shape == (300, 28, 28) and train.data.dtype == torch.uint8
    assert test.data.shape == (50, 28, 28) and test.targets.dtype == torch.int64
    expected = SyntheticFashionMNIST(train=True, size=300, seed=3)
    assert torch.equal(train.data, expected.data)
    assert torch.equal(train.targets, expected.targets)
    assert torch.equal(test.targets, SyntheticFashionMNIST(train=False, size=50, seed=3).targets)


def test_written_files_have_big_endian_idx_headers(tmp_path):
    raw = write_fashion_mnist(tmp_path, n_train=20, n_test=10)
    images = gzip.decompress((raw / 'train-images-idx3-ubyte.gz').read_bytes())
    labels = (raw / 't10k-labels-idx1-ubyte').read_bytes()

    assert struct.unpack('>4I', images[:16]) == (0x803, 20, 28, 28)
    assert len(images) == 16 + 20 * 28 * 28
    assert struct.unpack('>2I', labels[:8]) == (0x801, 10)
    assert torch.equal(tv_mnist.read_label_file(str(raw / 't10k-labels-idx1-ubyte')),
                       SyntheticFashionMNIST(train=False, size=10).targets)


def test_torchvision_needs_the_uncompressed_files_not_just_the_archives(tmp_path, no_download):
    write_fashion_mnist(tmp_path, n_train=20, n_test=10, extract=False)

    with pytest.raises(RuntimeError, match='Error downloading'):
        FashionMNIST(tmp_path, download=True)
    assert no_download, 'torchvision should have tried to download'


# -- load_fashion_mnist ------------------------------------------------------------------

def test_real_data_on_disk_is_loaded_with_the_transform(tmp_path, no_download):
    write_fashion_mnist(tmp_path, n_train=30, n_test=20)

    train, test, synthetic = load_fashion_mnist(tmp_path, data='real', transform=ToTensor())

    assert not synthetic
    assert isinstance(train, FashionMNIST) and isinstance(test, FashionMNIST)
    assert (len(train), len(test)) == (30, 20)
    image, label = train[0]
    assert image.shape == (1, 28, 28) and isinstance(label, int)


def test_auto_falls_back_to_synthetic_data_of_the_real_size_and_says_so_once(
        tmp_path, no_download, fengine_log):
    train, test, synthetic = load_fashion_mnist(tmp_path, data='auto', transform=ToTensor())

    assert synthetic
    assert isinstance(train, SyntheticFashionMNIST) and isinstance(test, SyntheticFashionMNIST)
    assert (len(train), len(test)) == (60000, 10000)
    assert train[0][0].shape == (1, 28, 28)
    [message] = fengine_log.messages()
    assert '\n' not in message
    assert str(tmp_path / 'FashionMNIST' / 'raw') in message
    assert 'offline (test)' in message and 'SyntheticFashionMNIST' in message


def test_auto_passes_the_fallback_line_to_a_given_log_callable(tmp_path, no_download,
                                                               fengine_log):
    lines = []
    load_fashion_mnist(tmp_path, data='auto', log=lines.append)

    assert len(lines) == 1 and 'could not be downloaded' in lines[0]
    assert fengine_log.messages() == []


def test_real_without_the_data_raises_one_clear_line(tmp_path, no_download):
    with pytest.raises(RuntimeError) as info:
        load_fashion_mnist(tmp_path / 'data', data='real')

    message = str(info.value)
    raw = tmp_path / 'data' / 'FashionMNIST' / 'raw'
    assert '\n' not in message
    assert message.startswith(f'FashionMNIST is not in {raw} and could not be downloaded '
                              '(offline (test))')
    assert '--data synthetic' in message
    assert list(tmp_path.iterdir()) == []  # no folder left behind


def test_a_failed_load_keeps_the_folders_that_were_there_before(tmp_path, no_download):
    (tmp_path / 'FashionMNIST').mkdir()
    (tmp_path / 'FashionMNIST' / 'notes.txt').write_text('mine')

    with pytest.raises(RuntimeError, match='could not be downloaded'):
        load_fashion_mnist(tmp_path, data='real')

    assert sorted(p.name for p in (tmp_path / 'FashionMNIST').iterdir()) == ['notes.txt']


def test_the_download_runs_under_a_socket_timeout_that_is_restored_after(tmp_path,
                                                                         no_download):
    before = socket.getdefaulttimeout()
    load_fashion_mnist(tmp_path, data='auto', timeout=7.5, log=None)

    assert no_download and no_download[0][1] == 7.5
    assert socket.getdefaulttimeout() == before


def test_real_with_download_off_says_so(tmp_path, no_download):
    with pytest.raises(RuntimeError, match='and download=False; pass --data synthetic'):
        load_fashion_mnist(tmp_path, data='real', download=False)
    assert no_download == []


def test_unreadable_files_on_disk_are_reported_as_unreadable(tmp_path, no_download):
    raw = write_fashion_mnist(tmp_path, n_train=20, n_test=10)
    (raw / 'train-images-idx3-ubyte').write_bytes(b'\x00\x00')

    with pytest.raises(RuntimeError, match='could not be read') as info:
        load_fashion_mnist(tmp_path, data='real')
    assert '\n' not in str(info.value)


def test_synthetic_never_touches_the_disk_or_the_network(tmp_path, no_download):
    train, test, synthetic = load_fashion_mnist(tmp_path / 'absent', data='synthetic')

    assert synthetic and (len(train), len(test)) == (60000, 10000)
    assert no_download == [] and not (tmp_path / 'absent').exists()


def test_an_unknown_data_choice_names_the_choices():
    with pytest.raises(ValueError, match="'auto', 'real', 'synthetic'.*Did you mean 'synthetic'"):
        load_fashion_mnist(data='synthetc')


def test_the_real_offline_attempt_is_quiet_and_leaves_nothing_that_breaks_a_rerun(
        tmp_path, capsys):
    try:
        socket.getaddrinfo(MIRROR_HOST, 80)
    except OSError:
        pass  # offline, as this machine is meant to be
    else:
        pytest.skip('this machine is online: the download would not fail')
    before = socket.getdefaulttimeout()

    for _ in range(2):
        _, _, synthetic = load_fashion_mnist(tmp_path, data='auto', timeout=2.0)
        assert synthetic

    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert err == '' and len(lines) == 2  # one warning per attempt, nothing from torchvision
    assert all(' - fengine - WARNING - FashionMNIST is not in' in line for line in lines)
    assert all('could not be downloaded' in line for line in lines)
    assert socket.getdefaulttimeout() == before
    assert list(tmp_path.iterdir()) == []  # the folders torchvision made are gone


# -- SyntheticFashionMNIST ---------------------------------------------------------------

def test_synthetic_splits_have_torchvisions_sizes_types_and_classes():
    train, test = SyntheticFashionMNIST(), SyntheticFashionMNIST(train=False)

    assert (len(train), len(test)) == (60000, 10000)
    assert train.data.shape == (60000, 28, 28) and train.data.dtype == torch.uint8
    assert train.targets.dtype == torch.int64
    assert train.classes == FashionMNIST.classes == FASHION_MNIST_CLASSES
    assert train.targets.bincount().tolist() == [6000] * 10
    assert train.data.min() == 0 and train.data.max() == 255


def test_synthetic_items_are_pil_images_through_the_transforms():
    ds = SyntheticFashionMNIST(size=8, transform=ToTensor(), target_transform=lambda t: t + 100)
    plain = SyntheticFashionMNIST(size=8)

    image, label = ds[3]
    pil, plain_label = plain[3]
    assert pil.mode == 'L' and pil.size == (28, 28) and isinstance(plain_label, int)
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert torch.equal(image[0], ds.data[3].float() / 255)
    assert label == plain_label + 100


def test_synthetic_data_is_fixed_by_the_seed_and_differs_between_splits():
    a = SyntheticFashionMNIST(size=500, seed=1)
    b = SyntheticFashionMNIST(size=500, seed=1)
    other_seed = SyntheticFashionMNIST(size=500, seed=2)
    test_split = SyntheticFashionMNIST(train=False, size=500, seed=1)

    assert torch.equal(a.data, b.data) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.data, other_seed.data)
    assert not torch.equal(a.data, test_split.data)


def nearest_class_mean_accuracy(train: SyntheticFashionMNIST, test: SyntheticFashionMNIST,
                                n_train: int, n_test: int) -> float:
    x = train.data[:n_train].flatten(1).float() / 255
    y = train.targets[:n_train]
    means = torch.stack([x[y == c].mean(0) for c in range(10)])
    x_test = test.data[:n_test].flatten(1).float() / 255
    predicted = torch.cdist(x_test, means).argmin(1)
    return (predicted == test.targets[:n_test]).float().mean().item()


@pytest.mark.parametrize('seed', [0, 1])
def test_synthetic_data_is_learnable_but_not_trivially_separable(seed):
    train = SyntheticFashionMNIST(size=5000, seed=seed)
    test = SyntheticFashionMNIST(train=False, size=1000, seed=seed)

    accuracy = nearest_class_mean_accuracy(train, test, 5000, 1000)

    assert 0.70 < accuracy < 0.97, accuracy  # chance is 0.10


def test_synthetic_test_split_is_drawn_like_the_train_split():
    # The same prototypes: class means of the two splits agree far better than the
    # means of two different classes do.
    train = SyntheticFashionMNIST(size=5000)
    test = SyntheticFashionMNIST(train=False, size=5000)

    def means(ds):
        x = ds.data.flatten(1).float()
        return torch.stack([x[ds.targets == c].mean(0) for c in range(10)])

    distances = torch.cdist(means(train), means(test))
    assert torch.equal(distances.argmin(1), torch.arange(10))


@pytest.mark.parametrize('size', [0, -5, 2.5, True])
def test_a_bad_size_is_refused(size):
    with pytest.raises(ValueError, match=f'size must be a positive int.*{size!r}'):
        SyntheticFashionMNIST(size=size)


def test_synthetic_fashion_mnist_is_built_from_the_datasets_registry():
    ds = DATASETS.build(dict(type='SyntheticFashionMNIST', train=False, size=10))

    assert isinstance(ds, SyntheticFashionMNIST) and len(ds) == 10 and not ds.train


def test_raw_files_match_what_torchvision_checks_for(tmp_path):
    probe = FashionMNIST.__new__(FashionMNIST)
    probe.root = str(tmp_path)
    expected = {Path(url).stem for url, _ in FashionMNIST.resources}

    assert set(RAW_FILES) == expected
    assert not probe._check_exists()
    write_fashion_mnist(tmp_path, n_train=10, n_test=10)
    assert probe._check_exists()
