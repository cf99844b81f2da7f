"""Evaluation: the paper's misalignment eval over scenario questions."""
