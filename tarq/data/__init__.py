"""Data access: demo logs, importers, point-in-time samples, feature vocabularies."""
