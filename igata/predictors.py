"""The original import path of the predictor base class."""

from igata_core.predictor import PredictorBase

__all__ = ["PredictorBase"]
