"""The release of a day: does today's model continue its parent or train cold
(``lineage``), may the challenger replace the champion (``gate``), and the versioned, atomic
publication of the served semantic-ID table with rollback (``publish``).

May import the shared modules, :mod:`tarq.data`, :mod:`tarq.model`, :mod:`tarq.training` and
:mod:`tarq.ids`; never serving.
"""
