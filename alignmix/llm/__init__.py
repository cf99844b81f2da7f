"""Text-generation backends (OpenAI-compatible HTTP, local transformers) plug in here."""

from alignmix.llm.backend import (
    BackendError,
    ChatBackend,
    Completion,
    Message,
    Sampling,
    bounded_gather,
    open_backend,
    run_chats,
)

__all__ = [
    "BackendError", "ChatBackend", "Completion", "Message", "Sampling", "bounded_gather", "open_backend", "run_chats",
]
