"""Deployment with exported models, on onnxruntime, numpy and OpenCV only (no PyTorch): the liveness
predictor (`liveness`), the authenticator that fuses matching and liveness into one decision
(`authenticator`), the component model both open (`models`: crop geometry, preprocessing, session), and
the attempt features the authenticator and the fusion trainer compute alike (`features`)."""
