"""Training: everything that turns the IMDB archive into an artifact. Inference never imports it."""
