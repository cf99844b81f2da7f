"""Corpus steps as datatrove pipeline blocks: read, tag, generate, plan and mix."""

METADATA_KEY = "ai_discourse"  # the namespace taggers write under `metadata`, and selectors read
