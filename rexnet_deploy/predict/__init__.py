"""Predict stage: the user's images through any exported file (``rexnet-deploy predict``)."""

from ..lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "PredictRequest": ".predict",
    "Predictions": ".predict",
    "find_images": ".predict",
    "predict_images": ".predict",
    "write_predictions": ".predict",
})

__all__ = ["PredictRequest", "Predictions", "find_images", "predict_images", "write_predictions"]
