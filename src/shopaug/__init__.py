"""shopaug: augment e-commerce ranking training samples with language models, and measure it."""

__version__ = "0.1.0"
