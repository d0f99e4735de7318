"""shopaug.scale."""
