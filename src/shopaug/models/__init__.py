"""shopaug.models."""
