"""shopaug.serve."""
