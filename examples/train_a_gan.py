"""Train a GAN with two optimizers, as in MMEngine's example "Train a GAN", on fengine.

A generator and a discriminator, each with its own optimizer wrapper; ``train_step``
picks them by name (``optim_wrapper['discriminator'].update_params(...)``). The
wrappers come from a config by optimizer name (``MultiOptimWrapperConstructor``), each
with its own parameter schedule, or are built by hand (``--by-hand``) as in MMEngine's
page. Training with several optimizers runs eagerly: a compiled step fuses the update
of one optimizer (see ``fengine.optim.OptimWrapperDict``).

Run offline on random images (the default), or on MNIST (downloaded to ``--data-root``)::

    python examples/train_a_gan.py --epochs 1
    python examples/train_a_gan.py --data mnist --epochs 20
"""
from __future__ import annotations

import argparse
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fengine.model import BaseModel, ImgDataPreprocessor
from fengine.optim import OptimWrapper, OptimWrapperDict
from fengine.runner import Runner

IMG_SHAPE = (1, 28, 28)


class RandomImages(Dataset):
    """``count`` random 8-bit images, as ``dict(inputs=uint8 (1, 28, 28) tensor)``."""

    def __init__(self, count: int, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (count, *IMG_SHAPE), generator=gen,
                                    dtype=torch.uint8)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return dict(inputs=self.images[index])


class MNISTImages(Dataset):
    """MNIST's training images, as ``dict(inputs=uint8 (1, 28, 28) tensor)``."""

    def __init__(self, root: str) -> None:
        from torchvision.datasets import MNIST

        self.images = MNIST(root, train=True, download=True).data.unsqueeze(1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return dict(inputs=self.images[index])


class Generator(nn.Module):

    def __init__(self, noise_size: int, img_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.img_shape = img_shape
        self.noise_size = noise_size

        def block(in_feat: int, out_feat: int, normalize: bool = True) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Linear(in_feat, out_feat)]
            if normalize:
                layers.append(nn.BatchNorm1d(out_feat, 0.8))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            return layers

        self.model = nn.Sequential(
            *block(noise_size, 128, normalize=False), *block(128, 256), *block(256, 512),
            *block(512, 1024), nn.Linear(1024, int(np.prod(img_shape))), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z).view(z.size(0), *self.img_shape)


class Discriminator(nn.Module):

    def __init__(self, img_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(int(np.prod(img_shape)), 512), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(512, 256), nn.LeakyReLU(0.2, inplace=True), nn.Linear(256, 1),
            nn.Sigmoid())

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.model(img.view(img.size(0), -1))


def set_requires_grad(nets: nn.Module | list[nn.Module], requires_grad: bool = False) -> None:
    """Freeze (or unfreeze) every parameter of ``nets``."""
    for net in nets if isinstance(nets, list) else [nets]:
        for param in net.parameters():
            param.requires_grad = requires_grad


class GAN(BaseModel):
    """The discriminator, then the generator, each updated by its own optimizer wrapper."""

    def __init__(self, generator: Generator, discriminator: Discriminator, noise_size: int,
                 data_preprocessor: nn.Module) -> None:
        super().__init__(data_preprocessor=data_preprocessor)
        if generator.noise_size != noise_size:
            raise ValueError(f'the generator takes noise of size {generator.noise_size}, '
                             f'not {noise_size}')
        self.generator = generator
        self.discriminator = discriminator
        self.noise_size = noise_size

    def train_step(self, data: dict, optim_wrapper: OptimWrapperDict) -> dict:
        inputs = self.data_preprocessor(data, True)
        disc_wrapper = optim_wrapper['discriminator']
        with disc_wrapper.optim_context(self.discriminator):
            log_vars = self.train_discriminator(inputs, disc_wrapper)
        set_requires_grad(self.discriminator, False)
        gen_wrapper = optim_wrapper['generator']
        with gen_wrapper.optim_context(self.generator):
            log_vars.update(self.train_generator(inputs, gen_wrapper))
        set_requires_grad(self.discriminator, True)
        return log_vars

    def forward(self, batch_inputs: torch.Tensor, data_samples=None, mode=None):
        return self.generator(batch_inputs)

    def disc_loss(self, disc_pred_fake: torch.Tensor, disc_pred_real: torch.Tensor):
        return self.parse_losses(dict(
            loss_disc_fake=F.binary_cross_entropy(disc_pred_fake, torch.zeros_like(disc_pred_fake)),
            loss_disc_real=F.binary_cross_entropy(disc_pred_real, torch.ones_like(disc_pred_real))))

    def gen_loss(self, disc_pred_fake: torch.Tensor):
        return self.parse_losses(dict(
            loss_gen=F.binary_cross_entropy(disc_pred_fake, torch.ones_like(disc_pred_fake))))

    def train_discriminator(self, inputs: dict, optim_wrapper: OptimWrapper) -> dict:
        real_imgs = inputs['inputs']
        z = torch.randn(real_imgs.shape[0], self.noise_size).type_as(real_imgs)
        with torch.no_grad():
            fake_imgs = self.generator(z)
        loss, log_vars = self.disc_loss(self.discriminator(fake_imgs),
                                        self.discriminator(real_imgs))
        optim_wrapper.update_params(loss)
        return log_vars

    def train_generator(self, inputs: dict, optim_wrapper: OptimWrapper) -> dict:
        real_imgs = inputs['inputs']
        z = torch.randn(real_imgs.shape[0], self.noise_size).type_as(real_imgs)
        loss, log_vars = self.gen_loss(self.discriminator(self.generator(z)))
        optim_wrapper.update_params(loss)
        return log_vars


def build_model(noise_size: int = 100) -> GAN:
    return GAN(Generator(noise_size, IMG_SHAPE), Discriminator(IMG_SHAPE), noise_size,
               ImgDataPreprocessor(mean=[127.5], std=[127.5]))


# Two optimizers from one config, by submodule name, each with its own schedule.
OPTIM_WRAPPER = dict(
    generator=dict(optimizer=dict(type='Adam', lr=1e-4, betas=(0.5, 0.999))),
    discriminator=dict(optimizer=dict(type='Adam', lr=1e-4, betas=(0.5, 0.999))))
PARAM_SCHEDULER = dict(
    generator=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=10)],
    discriminator=[dict(type='ConstantLR', factor=0.5, by_epoch=False, begin=0, end=10)])


def optim_wrappers_by_hand(model: GAN) -> OptimWrapperDict:
    """MMEngine's page builds the wrappers itself; the same in fengine."""
    opt_g = torch.optim.Adam(model.generator.parameters(), lr=1e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=1e-4, betas=(0.5, 0.999))
    return OptimWrapperDict(generator=OptimWrapper(opt_g), discriminator=OptimWrapper(opt_d))


def build_runner(work_dir: str, data: str = 'synthetic', data_root: str = './data',
                 epochs: int = 1, batch_size: int = 64, num_samples: int = 256,
                 by_hand: bool = False, resume: bool = False) -> Runner:
    dataset = MNISTImages(data_root) if data == 'mnist' else RandomImages(num_samples)
    model = build_model()
    return Runner(
        model,
        work_dir=work_dir,
        train_dataloader=DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                    drop_last=True),
        train_cfg=dict(by_epoch=True, max_epochs=epochs),
        optim_wrapper=optim_wrappers_by_hand(model) if by_hand else OPTIM_WRAPPER,
        param_scheduler=None if by_hand else PARAM_SCHEDULER,
        resume=resume)


def main(argv: Sequence[str] | None = None) -> Runner:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', choices=['synthetic', 'mnist'], default='synthetic')
    parser.add_argument('--data-root', default='./data')
    parser.add_argument('--work-dir', default='runs/gan/')
    parser.add_argument('--epochs', type=int, default=1)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--num-samples', type=int, default=256,
                        help='how many random images with --data synthetic')
    parser.add_argument('--by-hand', action='store_true',
                        help='build the OptimWrapperDict by hand, as MMEngine\'s page does')
    parser.add_argument('--resume', action='store_true')
    args = parser.parse_args(argv)
    runner = build_runner(args.work_dir, args.data, args.data_root, args.epochs,
                          args.batch_size, args.num_samples, args.by_hand, args.resume)
    runner.train()
    return runner


if __name__ == '__main__':
    main()
