"""Signal-propagation diagnostics: measure per-sub-layer statistics on real batches and compare them with
``dslm_zoo.theory.predict`` (Kedia et al. 2024, arXiv:2403.09635, the authors' measurement protocol)."""
from ..theory.predict import SignalPrediction, SignalTable, measure_embedding, measure_r_emb, predict, token_correlation
from .compare import (
    Comparison, SignalMeasurement, across_models, average_pairs, compare, measure, measure_many, predict_and_measure,
    predict_vs_measure,
)
from .hooks import ResidualPoint, SignalMonitor, residual_points

__all__ = [
    "SignalMonitor", "ResidualPoint", "predict_vs_measure", "predict_and_measure", "average_pairs", "across_models",
    "residual_points",
    "SignalMeasurement", "measure", "measure_many", "compare", "Comparison", "SignalPrediction", "SignalTable",
    "predict", "measure_r_emb", "measure_embedding", "token_correlation",
]
