"""Synthetic documents grounded in training-split scenario questions."""
