"""Text-generation backends (OpenAI-compatible HTTP, local transformers) plug in here."""
