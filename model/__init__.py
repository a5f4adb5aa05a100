"""The IMDB sentiment model: network, tokenizer, artifact I/O, training and evaluation.

Imports only torch, tokenizers and the standard library; knows nothing of HTTP.
"""

from model.artifact import DEFAULT_ARTIFACT, ArtifactError
from model.predictor import Encoded, Prediction, SentimentModel, estimate_cost, label_for, load_model, resolve_device

__all__ = ["DEFAULT_ARTIFACT", "ArtifactError", "Encoded", "Prediction", "SentimentModel", "estimate_cost",
           "label_for", "load_model", "resolve_device"]
