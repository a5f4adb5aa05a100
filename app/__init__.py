"""Sentiment-analysis web service: FastAPI app, request batcher and server entry point (`python -m app`)."""
