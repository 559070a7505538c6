"""Reading checkpoints safely: local files, http(s) URLs, ``.pth`` and ``.safetensors``.

``torch.load`` runs with ``weights_only=True`` unless the caller opts out, so a
checkpoint cannot run code when it is read. URLs are fetched with ``torch.hub``'s
downloader into its cache (``$TORCH_HOME/hub/checkpoints``), with its progress bar.
"""
from __future__ import annotations

import os
import pickle
import urllib.error
import urllib.parse
from typing import Any, Mapping, TypeVar

import torch

from .logging import print_log

__all__ = ['load_checkpoint_file', 'state_dict_from', 'select_prefix', 'is_url',
           'local_checkpoint_path', 'torch_load', 'corrupt_safetensors', 'strip_ddp_prefix']

V = TypeVar('V')


def is_url(path: str) -> bool:
    """True for ``http://`` and ``https://`` addresses."""
    return isinstance(path, str) and path.startswith(('http://', 'https://'))


def _download(url: str) -> str:
    """The cached local copy of ``url``, downloaded first if missing."""
    name = os.path.basename(urllib.parse.urlparse(url).path) or 'checkpoint.pth'
    folder = os.path.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, name)
    if not os.path.exists(target):
        try:
            # Writes to a temporary file and renames it, so an interrupted download
            # never leaves a truncated file in the cache.
            torch.hub.download_url_to_file(url, target, progress=True)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ConnectionError(f'cannot download checkpoint {url!r}: {exc}') from exc
    return target


def load_checkpoint_file(filename: str, map_location: Any = 'cpu',
                         weights_only: bool = True) -> Any:
    """Read a checkpoint from a path or URL (MMEngine: ``_load_checkpoint``).

    Args:
        filename: A local path or an http(s) URL; ``.safetensors`` files are read
            with safetensors, anything else with ``torch.load``.
        map_location: Passed to ``torch.load`` (a device for safetensors).
        weights_only: Refuse to unpickle anything but tensors and plain containers.
            Set it to False only for files you trust: unpickling can run code.

    Raises:
        FileNotFoundError: no such local file.
        ConnectionError: the URL cannot be fetched.
        RuntimeError: the file is corrupt, truncated or not a checkpoint, or holds
            objects that ``weights_only=True`` refuses to unpickle.
    """
    path = local_checkpoint_path(filename)
    if path.endswith('.safetensors'):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        device = map_location if isinstance(map_location, (str, torch.device)) else 'cpu'
        try:
            return load_file(path, device=str(device))
        except (SafetensorError, OSError) as exc:
            raise corrupt_safetensors(filename, exc) from exc
    return torch_load(path, os.fspath(filename), map_location, weights_only)


def local_checkpoint_path(filename: str) -> str:
    """The local file to read for ``filename``: itself, or the cached download of a URL.

    Logs where the checkpoint comes from, as MMEngine does.

    Raises:
        TypeError: ``filename`` is not a path or a URL string.
        FileNotFoundError: no such local file.
        ConnectionError: the URL cannot be fetched.
    """
    if not isinstance(filename, (str, os.PathLike)):
        raise TypeError(f'checkpoint must be a path or a URL string, but got '
                        f'{type(filename).__name__}: {filename!r}')
    filename = os.fspath(filename)
    if is_url(filename):
        print_log(f'http loads checkpoint from url: {filename}', logger='current')
        return _download(filename)
    print_log(f'local loads checkpoint from path: {filename}', logger='current')
    path = os.path.expanduser(filename)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint {filename!r} does not exist')
    return path


def corrupt_safetensors(filename: str, exc: Exception) -> RuntimeError:
    """The error for a safetensors file that cannot be read."""
    return RuntimeError(f'cannot read checkpoint {filename!r}: it is corrupt or not '
                        f'a safetensors file ({exc})')


def torch_load(path: str, filename: str, map_location: Any = 'cpu', weights_only: bool = True,
               mmap: bool = False) -> Any:
    """``torch.load`` of the local file ``path`` (read for ``filename``), errors explained.

    With ``mmap=True`` the tensors' storages are mapped from the file, not read: a page
    is read from disk only when some code touches it (torch's zip format only).
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only,
                          mmap=mmap)
    except pickle.UnpicklingError as exc:
        # torch says "Unsupported global" when a well-formed file holds objects that
        # weights_only refuses; anything else it cannot unpickle is damage.
        if weights_only and 'Unsupported global' in str(exc):
            raise RuntimeError(
                f'checkpoint {filename!r} holds objects that are not plain tensors, so it '
                'was not unpickled (weights_only=True). If you trust the file, pass '
                f'weights_only=False. Details: {exc}') from exc
        raise RuntimeError(f'cannot read checkpoint {filename!r}: it is corrupt or not a '
                           f'PyTorch checkpoint ({exc})') from exc
    except Exception as exc:  # noqa: BLE001 - a damaged file fails in many ways inside torch.load
        raise RuntimeError(f'cannot read checkpoint {filename!r}: it is corrupt, truncated '
                           f'or not a PyTorch checkpoint ({type(exc).__name__}: {exc})') from exc


def state_dict_from(checkpoint: Any, filename: str = 'checkpoint') -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: its ``state_dict`` or ``model`` entry, or itself.

    A leading ``module.`` (left by ``DistributedDataParallel``) is stripped from keys.
    """
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get('state_dict'), dict):
        state = checkpoint['state_dict']
    elif isinstance(checkpoint, dict) and isinstance(checkpoint.get('model'), dict):
        state = checkpoint['model']
    elif isinstance(checkpoint, dict):
        state = checkpoint
    else:
        raise TypeError(f'checkpoint {filename!r} holds a {type(checkpoint).__name__}; '
                        'expected a state dict, or a dict with "state_dict" or "model"')
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f'checkpoint {filename!r} is not a state dict: entries {bad[:5]} are '
                        'not tensors; expected a state dict, or a dict with "state_dict" or '
                        '"model"')
    return strip_ddp_prefix(state)


def strip_ddp_prefix(state: Mapping[str, V]) -> dict[str, V]:
    """``state`` with a leading ``module.`` (left by ``DistributedDataParallel``) stripped
    from its keys."""
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}


def select_prefix(state: Mapping[str, V], prefix: str,
                  filename: str = 'checkpoint') -> dict[str, V]:
    """The entries under ``prefix`` (e.g. ``'backbone.'``), with the prefix stripped."""
    if not prefix.endswith('.'):
        prefix += '.'
    selected = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not selected:
        tops = sorted({k.split('.', 1)[0] + '.' for k in state})
        raise KeyError(f'prefix {prefix!r} matches no key in checkpoint {filename!r}; its '
                       f'top-level prefixes are {", ".join(tops)}')
    return selected


def main(argv: list[str] | None = None) -> int:
    """``python -m fengine.checkpoint export-consolidated DIR OUT``: the command line.

    Writes the weights of the sharded checkpoint directory ``DIR`` as the single file
    ``OUT`` (``.safetensors`` or ``.pth``), see
    :func:`fengine.runner.sharded_checkpoint.export_consolidated`.

    Returns:
        The exit status: 0, or 1 when the checkpoint cannot be read or written (the
        reason is printed).
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog='python -m fengine.checkpoint',
        description='Tools for fengine checkpoints.')
    commands = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    export = commands.add_parser(
        'export-consolidated', help='write the weights of a sharded checkpoint directory as '
        'one file, for inference or load_from in a run that is not sharded',
        description='Write the model weights of a sharded checkpoint directory (as saved by '
        'a run whose model is sharded with FSDP2) as one weights-only file. OUT ending in '
        '.safetensors is written with safetensors, anything else with torch.save; both '
        'load with load_from=OUT. The whole model is gathered in memory.')
    export.add_argument('directory', metavar='DIR', help='the sharded checkpoint directory, '
                        'e.g. work_dirs/run/epoch_3')
    export.add_argument('out', metavar='OUT', help='the file to write, e.g. model.safetensors')
    args = parser.parse_args(argv)
    from .runner.sharded_checkpoint import export_consolidated

    try:
        out = export_consolidated(args.directory, args.out)
    except (OSError, RuntimeError, ValueError, ImportError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(f'wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) from {args.directory}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
