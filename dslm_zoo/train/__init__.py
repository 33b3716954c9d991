"""Training: one trainer for every family (text encoder and decoder, ViT, speech encoder-decoder). Recipes live
in ``recipes/``; tasks plug in through :func:`register_task`.

The floor above models, init and theory: nothing below imports it.
"""
from .config import Recipe, RecipeError, load_recipe
from .optim import dslm_lr_multipliers
from .tasks import Task, build_task, list_tasks, register_task
from .trainer import NonFiniteError, RunDirError, Trainer, TrainResult, read_metrics

__all__ = ["Recipe", "RecipeError", "load_recipe", "Task", "build_task", "list_tasks", "register_task", "Trainer",
           "TrainResult", "NonFiniteError", "RunDirError", "read_metrics", "dslm_lr_multipliers"]
