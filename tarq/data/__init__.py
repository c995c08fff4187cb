"""Data access: demo logs, importers, the lake layout, point-in-time samples, feature
vocabularies and the batch loader.

Imports only the shared modules (:mod:`tarq.store`, :mod:`tarq.runtime`, dates, defaults,
metrics); everything else builds on it.
"""
