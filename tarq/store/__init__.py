"""Storage shared by every stage: the DuckDB warehouse (``warehouse``), the run lock
(``locking``) and the named SQL statements of ``sql/`` (``sqlfiles``).

Imports nothing of tarq but :mod:`tarq.defaults` and the lake's paths
(:mod:`tarq.data.lake_fs`).
"""
