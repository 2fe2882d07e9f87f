"""cmdrdata-autopatch: bill every OpenAI call in a process to the right customer, with no code changes."""

from ._version import __version__

__all__ = ["__version__"]
