"""``MessageHub``: the scalars and facts of a run, shared by the loops and hooks.

MMEngine: ``mmengine.logging.MessageHub``. The difference that matters: a training
step's log values arrive as tensors (possibly still being computed on the device) and
stay tensors until a log line, a checkpoint or the end of an epoch needs them; then
every pending value is read in ONE device-to-host copy. A compiled step therefore
runs ahead of the host between log lines instead of waiting for each ``loss.item()``.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Mapping

import torch

__all__ = ['MessageHub', 'NonFiniteLossError']

# The recent values of each scalar that are kept: in memory by ``trim()`` and in
# checkpoints by ``state_dict()``.
SCALARS_KEPT = 1000


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message names the iteration and the keys."""


class MessageHub:
    """Runtime facts (``update_info``) and per-iteration scalars (``update_scalars``).

    Example:
        >>> import torch
        >>> hub = MessageHub()
        >>> hub.update_scalars('train', {'loss': torch.tensor(2.0)}, iteration=0)
        >>> hub.update_scalars('train', {'loss': torch.tensor(1.0)}, iteration=1)
        >>> hub.sync()  # one host read for both iterations
        [('train', 0, {'loss': 2.0}), ('train', 1, {'loss': 1.0})]
        >>> hub.mean('train/loss', 2)
        1.5
    """

    def __init__(self) -> None:
        self.runtime_info: dict[str, Any] = {}
        self._history: dict[str, list[float]] = defaultdict(list)
        self._pending: list[tuple[str, int, dict[str, Any]]] = []

    # -- facts -----------------------------------------------------------------------
    def update_info(self, key: str, value: Any) -> None:
        self.runtime_info[key] = value

    def get_info(self, key: str, default: Any = None) -> Any:
        return self.runtime_info.get(key, default)

    # -- scalars ---------------------------------------------------------------------
    def update_scalar(self, key: str, value: float) -> None:
        """Record a host-side number (a time, a count) right away."""
        self._history[key].append(float(value))

    def update_scalars(self, mode: str, values: Mapping[str, Any], iteration: int) -> None:
        """Queue one iteration's values (tensors are kept, not read) under ``mode/key``."""
        kept = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in values.items()}
        self._pending.append((mode, iteration, kept))

    def sync(self) -> list[tuple[str, int, dict[str, float]]]:
        """Read every queued value (one host copy per device) into the history.

        Returns:
            The records just read, as ``(mode, iteration, {key: float})``.

        Raises:
            NonFiniteLossError: a value whose key contains ``'loss'`` is NaN or
                infinite; the message names the first such iteration and its keys.
                Nothing of that or later iterations enters the history.
        """
        if not self._pending:
            return []
        pending, self._pending = self._pending, []
        records = _read(pending)
        for mode, iteration, values in records:
            bad = sorted(k for k, v in values.items() if 'loss' in k and not math.isfinite(v))
            if bad:
                shown = ', '.join(f'{k}={values[k]}' for k in bad)
                raise NonFiniteLossError(
                    f'the {mode} loss is not finite at iteration {iteration + 1}: {shown} '
                    f'(all values: {values}). Training stopped before saving anything from '
                    'this state; lower the learning rate, clip gradients '
                    "(optim_wrapper=dict(..., clip_grad=dict(max_norm=...))) or check the "
                    'data of that iteration.')
            for key, value in values.items():
                self._history[f'{mode}/{key}'].append(value)
        return records

    def history(self, key: str) -> list[float]:
        return self._history.get(key, [])

    def mean(self, key: str, window: int | None = None) -> float | None:
        """The mean of the last ``window`` values of ``key`` (all when ``None``)."""
        values = self._history.get(key)
        if not values:
            return None
        values = values[-window:] if window else values
        return sum(values) / len(values)

    def keys(self, prefix: str = '') -> list[str]:
        return [k for k in self._history if k.startswith(prefix)]

    def trim(self, keep: int = SCALARS_KEPT) -> None:
        """Forget all but the last ``keep`` values of each key (bounded memory)."""
        for key, values in self._history.items():
            if len(values) > keep:
                del values[:-keep]

    def state_dict(self) -> dict:
        """The facts and the last :data:`SCALARS_KEPT` values of each scalar.

        MMEngine: ``log_scalars``. A log line averages the last ``interval`` values; a
        run resumed between two log lines needs those written before the checkpoint to
        log the same numbers. The values are float64 tensors (safe for ``weights_only``).
        Queued values that were not read yet (see :meth:`sync`) are not included.
        """
        return {
            'runtime_info': dict(self.runtime_info),
            'log_scalars': {key: torch.tensor(values[-SCALARS_KEPT:], dtype=torch.float64)
                            for key, values in self._history.items()},
        }

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Add what :meth:`state_dict` returned: the facts, and the scalars after any
        values already recorded (a state without ``log_scalars`` adds facts only)."""
        self.runtime_info.update(state_dict.get('runtime_info', {}))
        for key, values in (state_dict.get('log_scalars') or {}).items():
            for value in (values.tolist() if isinstance(values, torch.Tensor) else values):
                self.update_scalar(key, value)


def _read(pending: Iterable[tuple[str, int, dict[str, Any]]]
          ) -> list[tuple[str, int, dict[str, float]]]:
    """Turn queued values into floats with one ``.tolist()`` per device."""
    pending = list(pending)
    by_device: dict[torch.device, list[torch.Tensor]] = defaultdict(list)
    slots: list[tuple[int, str, torch.device, int]] = []
    for index, (_, _, values) in enumerate(pending):
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                group = by_device[value.device]
                slots.append((index, key, value.device, len(group)))
                group.append(value.float().mean() if value.numel() != 1 else
                             value.float().reshape(()))
    read = {device: torch.stack(tensors).tolist() for device, tensors in by_device.items()}
    records = [(mode, iteration, dict(values)) for mode, iteration, values in pending]
    for index, key, device, position in slots:
        records[index][2][key] = read[device][position]
    for _, _, values in records:
        for key, value in list(values.items()):
            if not isinstance(value, (int, float)):
                del values[key]  # non-numeric log entries are not scalars
            else:
                values[key] = float(value)
    return records
