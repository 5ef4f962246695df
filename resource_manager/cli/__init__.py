"""rmctl: the command line of ResourceManager (`./client.py` runs it too)."""

from .main import main

__all__ = ["main"]
