"""Errors of loading a model version (reasons for UNAVAILABLE), not of serving a request."""

from __future__ import annotations


class UnsupportedModel(Exception):
    """The model declares something the server cannot serve (a reason for UNAVAILABLE)."""
