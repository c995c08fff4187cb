"""Semantic IDs for the whole catalog: the FAISS-checked greedy assignment and its health
report (``semantic_ids``), collision resolution (``id_resolution``) and churn against the served
table (``churn``).

May import the shared modules, :mod:`tarq.data` and :mod:`tarq.model`; never the release of a
day or serving.
"""
