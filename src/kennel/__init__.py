"""Kennel: a self-hosted server for AI workers that speaks the Handinger Workers API."""

__version__ = "0.1.0"
