"""The `fusion` trainer: one accept/reject decision from face-matching and liveness scores.

A matcher alone accepts a print of the enrolled person; a liveness model alone accepts any live
impostor. This trainer scores verification attempts (`faceauth.plugins.datasets.attempts`) with
frozen component models and learns the decision over their scores. One job per module:

- `options`: ``trainer:`` options (the optimiser and schedule are the recipe's ``optimizer`` and
  ``scheduler``, as for every trainer);
- `components`: the component models as the trainer's model inputs (``trainer.embedding_models``,
  ``trainer.liveness_models``; when none are given, the runner trains small ones from the built-in
  recipes ``fusion_embedding_component`` and ``fusion_liveness_component`` with this recipe's backbone,
  or from ``trainer.train_components``), opened from the ONNX files
  the runner hands over and scored with onnxruntime, as at deployment;
- `scores`: per-image outputs cached per split in ``$FACEAUTH_CACHE/scores/`` (rebuilt when a
  component changes), and the attempts' features (`faceauth.deploy.features`, the deployment code):
  match score per embedding model, log-odds of live per liveness model, with ``quality: true`` the
  probe's sharpness and brightness;
- `models`: ``mlp`` (the fused model, exported; its figures are a run's ``val`` and ``test``) beside the
  field's baselines (under ``baselines`` in ``metrics.json``) ``logistic``, ``and``
  (every component at its own threshold: validation EER with ``and_thresholds: val``, the models'
  stored thresholds with ``model``) and ``match`` (the matcher alone); several embedding models are
  fused as an ensemble by the MLP and logistic models;
- `data`: the attempt splits, their features and the baselines fitted before training;
- `task`: the MLP's training as a `faceauth.training.loop.Task` (the loop owns steps, checkpoints,
  exact resume and best-epoch selection on validation loss) and the final measurement;
- `trainer`: the trainer the registry builds (fit, load_model, torch_scorer, evaluate, export_bundle,
  model_inputs).

Measured like the field (`faceauth.metrics.joint`): FAR, FRR, HTER, EER and AUC on the licit protocol,
SFAR on the spoof protocol, each model's threshold chosen on validation at ``target_far`` and applied
unchanged to test. The run directory doubles as a models directory for
`faceauth.deploy.authenticator.Authenticator`: ``model.onnx`` (features [N, F] -> P(accept); metadata:
feature order, components, threshold) beside the component models the runner put there
(``embedding.onnx``, ``liveness.onnx``; ``-<i>`` suffixes when several).
"""

from __future__ import annotations

from faceauth.plugins.trainers.fusion.options import ComponentTraining, FusionOptions
from faceauth.plugins.trainers.fusion.trainer import FusionTrainer

__all__ = ["ComponentTraining", "FusionOptions", "FusionTrainer", "build"]


def build(options: FusionOptions) -> FusionTrainer:
    return FusionTrainer(options)
