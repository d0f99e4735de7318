"""shopaug.online."""
