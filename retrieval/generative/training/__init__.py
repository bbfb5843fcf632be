"""Training the generative retriever's language model (and learned prompt vectors) on identifier pairs, with
``accelerate``: supervised, corpus and pseudo-labelled pairs, then an optional LTRGR-style rank-loss stage."""

from ._train import TrainConfig, TrainTask, train_retriever

__all__ = ["TrainConfig", "TrainTask", "train_retriever"]
