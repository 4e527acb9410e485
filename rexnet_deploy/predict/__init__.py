"""Predict stage: the user's images through any exported file (``rexnet-deploy predict``)."""

from .predict import Predictions, PredictRequest, find_images, predict_images, write_predictions

__all__ = ["PredictRequest", "Predictions", "find_images", "predict_images", "write_predictions"]
