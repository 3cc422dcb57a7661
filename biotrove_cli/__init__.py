"""biotrove: a command-line toolkit for CLIP-style vision-language models of biodiversity."""

__version__ = "0.1.0"
