"""shopaug.data."""
