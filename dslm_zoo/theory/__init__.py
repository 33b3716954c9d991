"""Signal-propagation theory of Kedia et al. 2024 (arXiv:2403.09635).

- ``components``: closed-form moments of every transformer component (Sec. 2 of docs/theory.md), forward and
  backward, as functions of a ``Moments`` value.
- ``montecarlo``: the authors' verification suite (same grids, error definition and percentiles).
- ``recipe``: the DSLM initialisation constants and the correlation recursion.
"""
from . import components, montecarlo, recipe
from .components import *  # noqa: F401,F403  (the calculator: Moments, linear, relu, ..., propagate)
from .components import __all__ as _components_all
from . import signal
from .signal import SignalPrediction, SignalTable, StackSpec, SubSpec, predict_specs, token_correlation
from .recipe import (
    deepnorm_constants,
    dslm_attention_schedule,
    dslm_embedding_var,
    dslm_ffn_var,
    dslm_residual_scales,
)

__all__ = list(_components_all) + [
    "SignalPrediction", "SignalTable", "SubSpec", "StackSpec", "predict_specs", "token_correlation", "signal", "components", "montecarlo", "recipe", "deepnorm_constants", "dslm_attention_schedule", "dslm_embedding_var",
    "dslm_ffn_var", "dslm_residual_scales",
]
