"""shopaug.losses."""
