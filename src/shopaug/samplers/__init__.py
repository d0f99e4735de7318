"""shopaug.samplers."""
