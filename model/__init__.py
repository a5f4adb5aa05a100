"""The IMDB sentiment model: network, tokenizer, artifact I/O, training and evaluation.

Imports only torch, tokenizers and the standard library; knows nothing of HTTP.
"""

from model.artifact import DEFAULT_ARTIFACT, ArtifactError
from model.predictor import (BATCH_SIZE, MAX_BATCH_TOKENS, DtypeError, Encoded, Prediction, SentimentModel,
                             batch_admits, estimate_cost, label_for, load_model, resolve_device)

__all__ = ["BATCH_SIZE", "DEFAULT_ARTIFACT", "MAX_BATCH_TOKENS", "ArtifactError", "DtypeError", "Encoded",
           "Prediction", "SentimentModel", "batch_admits", "estimate_cost", "label_for", "load_model",
           "resolve_device"]
