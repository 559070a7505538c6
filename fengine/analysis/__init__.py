"""Model complexity: FLOPs, activations, parameters (MMEngine: ``mmengine.analysis``)."""
from .complexity import (ActivationAnalyzer, FlopAnalyzer, activation_count, flop_count,
                         get_model_complexity_info, parameter_count, parameter_count_table)

__all__ = ['FlopAnalyzer', 'ActivationAnalyzer', 'flop_count', 'activation_count',
           'parameter_count', 'parameter_count_table', 'get_model_complexity_info']
