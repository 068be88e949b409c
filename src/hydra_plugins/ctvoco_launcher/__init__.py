"""ctvoco's Hydra launcher: every multirun job in a process of its own (``hydra/launcher``)."""
