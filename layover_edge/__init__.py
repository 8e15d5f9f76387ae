"""layover-edge: the Layover early-exit head for multi-label tagging, from training to the edge."""
__version__ = "0.1.0"
