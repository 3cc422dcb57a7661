"""The biotrove core engine: plain Python + torch, no CLI, no printing.

Modules here never import typer or rich. Heavy dependencies (torch, open_clip) are imported
inside the functions that need them so that ``biotrove --help`` stays fast.
"""
