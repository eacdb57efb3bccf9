"""pbrl: offline preference-based reinforcement learning for control and recommendation."""

from pbrl.errors import PbrlError

__version__ = "0.1.0"
__all__ = ["PbrlError", "__version__"]
