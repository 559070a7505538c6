"""The Runner, its loops and its parts (MMEngine: ``mmengine.runner``)."""
from .checkpoint_io import atomic_save, find_last_checkpoint
from .data import DefaultSampler, build_dataloader, default_collate, pseudo_collate
from .history_buffer import HistoryBuffer
from .log_processor import LogProcessor
from .loops import EpochBasedTrainLoop, IterBasedTrainLoop, TestLoop, ValLoop
from .message_hub import MessageHub, NonFiniteLossError
from .randomness import set_random_seed
from .runner import DEFAULT_HOOKS, Runner
from .sharded_checkpoint import export_consolidated, load_consolidated

__all__ = ['Runner', 'DEFAULT_HOOKS', 'EpochBasedTrainLoop', 'IterBasedTrainLoop', 'ValLoop',
           'TestLoop', 'MessageHub', 'HistoryBuffer', 'LogProcessor', 'NonFiniteLossError',
           'DefaultSampler', 'build_dataloader', 'default_collate', 'pseudo_collate',
           'set_random_seed',
           'atomic_save', 'find_last_checkpoint', 'export_consolidated', 'load_consolidated']
