"""The groups of Settings (app/settings.py), one module per area."""
