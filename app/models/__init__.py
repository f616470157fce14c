"""Loaded model versions: signatures, session pools and their lifecycle."""
