"""`lstm`: a temporal liveness backbone, a frame encoder (any registered backbone) followed by an LSTM.

Input: clips ``[N, T, 3, H, W]`` of normalised frames (the encoder's `preprocess`); output
``[N, num_features]``. The forward pass folds time into the batch (``[N*T, 3, H, W]``), encodes
every frame, unfolds (``[N, T, F]``), runs the LSTM and pools its output over time, with no Python
loop over T and no data-dependent shape, so an exported model accepts any batch size and length.

``encoder_checkpoint`` starts the encoder from a liveness checkpoint of the ``classifier`` trainer
(its ``backbone.*`` weights, loaded strictly). That checkpoint's whole classifier, frozen and kept as
loaded, is the `frame_scorer`: the frame-level baseline a trainer can average per video.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import torch

import faceauth
from faceauth.data import live_log_odds
from faceauth.errors import CheckpointError, RecipeError
from faceauth.training import checkpoint
from faceauth.training.weights import is_restoring

__all__ = ["FrameScorer", "LstmOptions", "TemporalLstm", "build", "preprocess"]


@attrs.frozen
class LstmOptions:
    encoder: dict[str, Any] = attrs.field(factory=lambda: {"name": "resnet18", "input_size": 64})  # a backbone section
    encoder_checkpoint: str | None = None  # a liveness checkpoint (classifier trainer) to start the encoder from
    freeze_encoder: bool = False  # keep the encoder's weights, and its BatchNorm statistics (eval mode)
    hidden_size: int = attrs.field(default=128, validator=faceauth.schema.positive)
    layers: int = attrs.field(default=1, validator=faceauth.schema.positive)
    bidirectional: bool = False
    dropout: float = attrs.field(default=0.0, validator=faceauth.schema.fraction)  # between LSTM layers and on the output
    clip_length: int = attrs.field(default=8, validator=faceauth.schema.positive)  # T of the export example
    pooling: Literal["last", "mean"] = "last"  # last: final hidden state (both directions); mean: output over time


class FrameScorer(torch.nn.Module):
    """A frame-level liveness classifier, frozen: normalised frames ``[M, 3, H, W]`` to the log-odds of live ``[M]``."""

    def __init__(self, backbone: torch.nn.Module, head: torch.nn.Linear):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrameScorer:
        return super().train(False)  # always as loaded: BatchNorm keeps its statistics, dropout is off

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.backbone(frames)).float()
        return live_log_odds(logits)  # the liveness classifier's score


class TemporalLstm(torch.nn.Module):
    temporal = True

    def __init__(self, encoder: torch.nn.Module, options: LstmOptions, frame_scorer: FrameScorer | None = None):
        super().__init__()
        self.encoder = encoder
        self.freeze_encoder = options.freeze_encoder
        if options.freeze_encoder:
            encoder.requires_grad_(False)
        self.lstm = torch.nn.LSTM(encoder.num_features, options.hidden_size, num_layers=options.layers,
                                  batch_first=True, bidirectional=options.bidirectional,
                                  dropout=options.dropout if options.layers > 1 else 0.0)
        self.dropout = torch.nn.Dropout(options.dropout)
        self.pooling = options.pooling
        self.directions = 2 if options.bidirectional else 1
        self.num_features = options.hidden_size * self.directions
        self.preprocess = encoder.preprocess
        self.clip_length = options.clip_length
        self.frame_scorer = frame_scorer
        self.train()

    def train(self, mode: bool = True) -> TemporalLstm:
        super().train(mode)
        if self.freeze_encoder:
            # A frozen encoder keeps its BatchNorm running statistics: in train mode BatchNorm would
            # normalise with each batch's own statistics and update the stored ones.
            self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[0], x.shape[1]
        features = self.encoder(x.flatten(0, 1)).reshape(n, t, -1)
        output, last = self._lstm(features)
        if self.pooling == "mean":
            pooled = output.mean(dim=1)
        else:  # the last layer's final state; forward and backward side by side when bidirectional
            pooled = last[-self.directions:].transpose(0, 1).flatten(1)
        return self.dropout(pooled)

    def _lstm(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`self.lstm` over ``x [N, T, F]``: its output ``[N, T, D*H]`` and final hidden states ``[L*D, N, H]``.

        The functional call does what ``nn.LSTM.forward`` does, but passes the parameters themselves
        rather than the module's `_flat_weights` list, which torch.export reports as tensor attributes
        "assigned during export" (a UserWarning, an error where warnings are errors). They are the same
        tensors, so on CUDA cuDNN still finds them in one flattened buffer.
        """
        lstm = self.lstm
        zeros = x.new_zeros(lstm.num_layers * self.directions, x.shape[0], lstm.hidden_size)
        weights = [weight for layer in lstm.all_weights for weight in layer]
        output, last, _ = torch.lstm(x, (zeros, zeros), weights, lstm.bias, lstm.num_layers,
                                     lstm.dropout, self.training, lstm.bidirectional, lstm.batch_first)
        return output, last


# ---- building ----------------------------------------------------------------------------------------

def _load_liveness_checkpoint(path: str) -> dict[str, Any]:
    payload = checkpoint.load(checkpoint.resolve(path, key="backbone.encoder_checkpoint"))
    checkpoint.expect_task(payload, "liveness", "be the lstm's frame encoder (a classifier run's, e.g. of "
                           "recipes/liveness_resnet18.yaml)", key="backbone.encoder_checkpoint")
    return payload


def _weights(payload: dict[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in payload["model"].items() if key.startswith(prefix)}


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str, payload: dict[str, Any]) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:3])
        raise CheckpointError(f"backbone.encoder_checkpoint: {payload['path']}: its weights do not fit {what} "
                              f"({detail})") from None


def _frame_scorer(encoder: torch.nn.Module, options: LstmOptions, components: Any) -> FrameScorer:
    """Load the checkpoint's backbone weights into `encoder`; return the checkpoint's classifier, frozen."""
    payload = _load_liveness_checkpoint(options.encoder_checkpoint)
    section = dict(payload.get("recipe", {}).get("backbone") or {})
    expected = options.encoder.get("name")
    if section.get("name") != expected:
        raise CheckpointError(f"backbone.encoder_checkpoint: {payload['path']}: expected a '{expected}' backbone "
                              f"(backbone.encoder.name), found '{section.get('name')}'")
    if (payload.get("recipe", {}).get("trainer") or {}).get("input_norm", "dataset") != "dataset":
        raise CheckpointError(f"backbone.encoder_checkpoint: {payload['path']}: trained with trainer.input_norm: "
                              f"image (each image standardised inside the classifier), which the lstm encoder "
                              f"does not do; use a checkpoint trained with input_norm: dataset")
    if "pretrained" in section:
        section["pretrained"] = None  # the checkpoint's weights replace them; the file may be gone by now
    # The checkpoint's own backbone section, not ours: the classifier as it was trained.
    scorer_backbone = components.build("backbone", section, key="backbone.encoder_checkpoint")
    if scorer_backbone.preprocess != encoder.preprocess:
        raise CheckpointError(f"backbone.encoder_checkpoint: {payload['path']}: its backbone takes "
                              f"{_describe(scorer_backbone.preprocess)}, backbone.encoder takes "
                              f"{_describe(encoder.preprocess)} (set backbone.encoder to the checkpoint's "
                              f"backbone section: {section})")
    state = _weights(payload, "backbone.")
    _load_strict(encoder, state, "backbone.encoder", payload)
    if options.freeze_encoder:
        scorer_backbone = encoder  # frozen, so it stays the checkpoint's: share it instead of a second copy
    else:
        _load_strict(scorer_backbone, state, "its own backbone section", payload)
    head_state = _weights(payload, "head.")
    if "weight" not in head_state:
        raise CheckpointError(f"backbone.encoder_checkpoint: {payload['path']}: no classification head (head.*) "
                              f"in the checkpoint's model")
    head = torch.nn.Linear(head_state["weight"].shape[1], head_state["weight"].shape[0])
    _load_strict(head, head_state, "a linear head", payload)
    return FrameScorer(scorer_backbone, head)


def _describe(preprocess: Any) -> str:
    h, w = preprocess.input_size
    return f"{h}x{w} input, mean {preprocess.mean}, std {preprocess.std}"


def preprocess(options: LstmOptions, components: Any) -> Any:
    """The frame encoder's preprocessing (`backbone.encoder`), applied to every frame of a clip."""
    return components.preprocess(options.encoder, key="backbone.encoder")


def build(options: LstmOptions, components: Any) -> TemporalLstm:
    encoder = components.build("backbone", options.encoder, key="backbone.encoder")
    if getattr(encoder, "temporal", False):
        raise RecipeError(f"backbone.encoder: '{options.encoder.get('name')}' is a temporal backbone; the encoder "
                          f"maps single frames to features (e.g. name: resnet18)")
    for attribute in ("num_features", "preprocess"):
        if not hasattr(encoder, attribute):
            raise faceauth.PluginError(f"backbone.encoder: backbone '{options.encoder.get('name')}' has no "
                                       f"'{attribute}' attribute (see faceauth.components.Backbone)")
    scorer = None
    if options.encoder_checkpoint and is_restoring():
        # Weights come from this model's own checkpoint or export: the frame scorer's structure is the encoder's
        # (its weights were loaded strictly into it) and a live/spoof head; its file is not needed any more.
        scorer_backbone = encoder if options.freeze_encoder else components.build(
            "backbone", options.encoder, key="backbone.encoder")
        scorer = FrameScorer(scorer_backbone, torch.nn.Linear(encoder.num_features, 2))
    elif options.encoder_checkpoint:
        scorer = _frame_scorer(encoder, options, components)
    return TemporalLstm(encoder, options, scorer)
