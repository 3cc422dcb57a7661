"""Distributed: building and running torch's elastic launcher (torchrun), rank/world helpers."""
