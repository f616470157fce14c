"""The model repository on disk: layout, per-model configuration."""
