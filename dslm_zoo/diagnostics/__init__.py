"""Signal-propagation diagnostics: measure per-sub-layer statistics on real batches and compare them with
``dslm_zoo.diagnostics.predict`` (the recursion of ``dslm_zoo.theory.signal``) (Kedia et al. 2024, arXiv:2403.09635, the authors' measurement protocol)."""
from ..theory.signal import SignalPrediction, SignalTable, token_correlation
from .predict import measure_embedding, measure_r_emb, predict
from .compare import (
    Comparison, SignalMeasurement, across_models, average_pairs, compare, measure, measure_many, predict_and_measure,
    predict_vs_measure,
)
from .hooks import ResidualPoint, SignalMonitor, residual_points
from .attention import attention_entropy

__all__ = [
    "SignalMonitor", "ResidualPoint", "predict_vs_measure", "predict_and_measure", "average_pairs", "across_models",
    "residual_points",
    "SignalMeasurement", "measure", "measure_many", "compare", "Comparison", "SignalPrediction", "SignalTable",
    "predict", "measure_r_emb", "measure_embedding", "token_correlation", "attention_entropy",
]
