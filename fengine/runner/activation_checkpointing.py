"""MMEngine's import path (``mmengine.runner.activation_checkpointing``) for
:mod:`fengine.model.activation_checkpointing`, where the model's steps can see it."""
from ..model.activation_checkpointing import checkpointed_modules, turn_on_activation_checkpointing

__all__ = ['turn_on_activation_checkpointing', 'checkpointed_modules']
