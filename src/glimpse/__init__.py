"""Glimpse: self-hostable photo and video sharing."""

__version__ = "0.1.0"
