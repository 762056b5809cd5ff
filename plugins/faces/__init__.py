"""Face geometry helpers shared by datasets and deployment code: five-point alignment (numpy + Pillow only)."""

from faceauth.plugins.faces.align import ARCFACE_TEMPLATE_112, align_five_point, similarity_transform

__all__ = ["ARCFACE_TEMPLATE_112", "align_five_point", "similarity_transform"]
