"""Output: the only place besides ``cli/`` that imports rich. Results go to stdout, the rest to
stderr."""
