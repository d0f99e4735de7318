"""shopaug.eval."""
