"""shopaug.index."""
