"""shopaug.tune."""
