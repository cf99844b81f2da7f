"""Corpus steps as datatrove pipeline blocks: read, tag, generate, plan and mix."""
