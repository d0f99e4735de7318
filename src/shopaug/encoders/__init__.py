"""shopaug.encoders."""
