"""The surface every dslm_zoo model shares (timm style): config, pretrained cfg, init schemes, classifier reset."""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from .._config import ConfigBase
from .._registry import PretrainedCfg

__all__ = ["ZooModel"]


class ZooModel(nn.Module):
    """Base class of all dslm_zoo models.

    Subclasses set ``config_class`` and build themselves from ``cfg`` in ``__init__(cfg, *, device, dtype)``,
    then call ``self._post_init(device)``, which initialises the weights with ``cfg.init`` unless the model
    lives on the meta device (materialise with ``to_empty`` and call ``init_weights`` afterwards).
    """

    config_class: ClassVar[type[ConfigBase]]
    cfg: Any
    pretrained_cfg: PretrainedCfg | None = None

    def _post_init(self, device: torch.device | str | None) -> None:
        if torch.device(device or "cpu").type != "meta":
            self.init_weights(self.cfg.init)

    def init_weights(self, scheme: str | None = None) -> dict[str, Any]:
        """Initialise every parameter with a named scheme; returns ``{parameter name: rule}``.

        ``'skip'`` touches no parameter (use it before loading weights); every scheme also re-derives the
        non-persistent buffers (position tables, ALiBi slopes), so a model materialised from meta is complete.
        """
        from ..init import init_model  # local: init imports the layer types of the models

        return init_model(self, scheme or self.cfg.init)

    @property
    def default_cfg(self) -> PretrainedCfg | None:
        """timm's older name for ``pretrained_cfg``."""
        return self.pretrained_cfg

    # Models with a classifier override these two.
    @property
    def num_classes(self) -> int | None:
        return None

    def reset_classifier(self, num_classes: int) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no classifier to reset")
