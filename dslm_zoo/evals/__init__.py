"""Evaluation metrics with the semantics of the official scripts (the floor above models and training)."""
from . import bleu, squad

__all__ = ["bleu", "squad"]
