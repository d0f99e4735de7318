"""shopaug.augment."""
