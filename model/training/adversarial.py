"""One optimisation step of the sequence path, with adversarial training on its embeddings (Miyato et al., 2017).

The clean loss is back-propagated first; its gradient with respect to each review's token embeddings gives the
direction that hurts the model most, and the step adds the loss of the same batch with the embeddings moved
`eps` along it. Both gradients accumulate into one update, so the cost is two forward and two backward passes.
The model learns to be flat around every training review in embedding space, which regularises the LSTM far
more than dropout alone (the n-gram model is untouched: it reads no embeddings).
"""

from __future__ import annotations

import torch
from torch import nn

from model.network import SentimentLSTM

_loss = nn.BCEWithLogitsLoss()


def train_step(network: SentimentLSTM, ids: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
               eps: float) -> float:
    """Accumulate the gradients of one batch (soft or hard targets in [0, 1]); returns the clean loss."""
    embedded = network.embedding(ids)
    if eps:
        embedded.retain_grad()
    loss = _loss(network.lstm_logit_of_embedded(embedded, lengths), targets)
    loss.backward()
    if eps:
        grad = embedded.grad.detach()
        # One norm per review over all of its tokens (padding has zero gradient), scaled by the embeddings' RMS,
        # so the perturbation keeps its size relative to the embeddings however far training moves them.
        norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)
        scale = embedded.detach().pow(2).mean().sqrt()
        perturbed = network.embedding(ids) + eps * scale * grad / norm
        _loss(network.lstm_logit_of_embedded(perturbed, lengths), targets).backward()
    return loss.item()
