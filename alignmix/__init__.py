"""alignmix: measure, control and train on AI discourse in pretraining data."""

import os

__version__ = "0.1.0"

# Everything runs offline: stop litdata from asking PyPI for a newer release on import.
os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
