"""shopaug.train."""
