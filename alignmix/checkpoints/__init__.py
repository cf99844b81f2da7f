"""Model folders: released checkpoints in, conversions between their formats."""
