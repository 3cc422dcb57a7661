"""Models: the architecture registry and presets, checkpoint I/O, ``load_model``, export."""
