"""Deployment with exported models, on onnxruntime, numpy and OpenCV only (no PyTorch): the liveness
predictor (`liveness`), the authenticator that fuses matching and liveness into one decision
(`authenticator`), and the features both it and the fusion trainer compute (`features`)."""
