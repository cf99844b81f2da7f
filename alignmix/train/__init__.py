"""Training stages through litgpt: generated configs, launch, resume."""
