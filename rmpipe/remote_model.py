"""An rmpipe reward model as a transformers class: a backbone, rmpipe's pooling, rmpipe's head.

``rmpipe export`` copies this file into an exported folder as ``modeling_rmpipe.py`` for the
heads that no stock class reproduces (an MLP head, mean pooling, an inner layer); the folder then
loads with ``AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)``.
It must stand alone: torch and transformers only, nothing from rmpipe.

The forward pass is rmpipe's embedding pass (``stages/embed/hf_backend.py``): positions counted
from each row's first real token (so left and right padding give the same result, also for
absolute-position encoders such as BERT), the chosen layer, pooling over the attention mask
(``last``: the state at the last real token; ``mean``: the mean over real tokens), then the head.
The output is the head's logit, shape (batch, 1); ``sigmoid`` of it is rmpipe's reward.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.auto import CONFIG_MAPPING

ACTIVATIONS = {"leaky_relu": nn.LeakyReLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class RmpipeRewardConfig(PretrainedConfig):
    """The backbone's own config (nested) plus how rmpipe pools it and the head's shape."""

    model_type = "rmpipe_reward"

    def __init__(self, backbone_config=None, pooling: str = "last", layer: int = -1,
                 head_hidden=(), head_activation: str = "leaky_relu", head_dropout: float = 0.0,
                 head_bias: bool = True, **kwargs):
        if isinstance(backbone_config, dict):
            backbone_config = CONFIG_MAPPING[backbone_config["model_type"]](**backbone_config)
        self.backbone_config = backbone_config
        self.pooling = pooling
        self.layer = int(layer)
        self.head_hidden = [int(h) for h in head_hidden]
        self.head_activation = head_activation
        self.head_dropout = float(head_dropout)
        self.head_bias = bool(head_bias)
        kwargs.setdefault("num_labels", 1)
        super().__init__(**kwargs)

    def to_dict(self):
        out = super().to_dict()
        if isinstance(self.backbone_config, PretrainedConfig):
            out["backbone_config"] = self.backbone_config.to_dict()
        return out


class RewardHead(nn.Module):
    """rmpipe's head, layer for layer (same module indices, so the same weight names)."""

    def __init__(self, in_dim: int, hidden, activation: str, dropout: float, bias: bool):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, 1, bias=bias))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, T, H) and mask (B, T) -> (B, H); a row with no real token pools to zeros."""
    mask = mask.bool()
    if mode == "mean":
        real = torch.where(mask[..., None], hidden.float(), 0.0)
        count = mask.sum(dim=1, keepdim=True).clamp(min=1)
        return (real.sum(dim=1) / count).to(hidden.dtype)
    steps = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask, steps, -1).amax(dim=1)
    out = hidden[torch.arange(hidden.shape[0], device=hidden.device), last.clamp(min=0)]
    return torch.where((last >= 0)[:, None], out, torch.zeros_like(out))


class RmpipeRewardModel(PreTrainedModel):
    config_class = RmpipeRewardConfig
    base_model_prefix = "backbone"
    _no_split_modules: list[str] = []

    def __init__(self, config: RmpipeRewardConfig):
        super().__init__(config)
        self.backbone = AutoModel.from_config(config.backbone_config)
        self.head = RewardHead(config.backbone_config.hidden_size, config.head_hidden,
                               config.head_activation, config.head_dropout, config.head_bias)
        self.post_init()

    def _init_weights(self, module):
        pass  # every weight comes from the exported folder

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, return_dict=None,
                **kwargs) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        positions = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": positions}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        inner = self.config.layer != -1
        if getattr(self.config.backbone_config, "use_cache", False):
            inputs["use_cache"] = False
        out = self.backbone(**inputs, output_hidden_states=inner)
        hidden = out.hidden_states[self.config.layer] if inner else out.last_hidden_state
        pooled = pool(hidden, attention_mask, self.config.pooling)
        logits = self.head(pooled.to(self.head.net[-1].weight.dtype))
        return SequenceClassifierOutput(logits=logits)
