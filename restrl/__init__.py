"""restrl: the ReST-RL recipe as a cached, observable pipeline."""

__version__ = "0.1.0"
