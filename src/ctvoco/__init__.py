"""ctvoco."""
