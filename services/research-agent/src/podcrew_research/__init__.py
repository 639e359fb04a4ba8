"""podcrew research agent: answers one sub-question with a bounded tool-use loop."""

__version__ = "0.1.0"
