"""Training: one loop for TARQ and every baseline on the sample Parquet files, its flags, the
evaluation of a model on a stream or another day, batch scoring (the user side once per
request), and warm starts from a parent model.

Holds ``train`` (:func:`train.train`, the epoch loop), ``train_args`` (torch-free CLI flags),
``evaluation``, ``batch_scoring`` and ``warm_start``. May import the shared modules,
:mod:`tarq.data`, :mod:`tarq.model`; never semantic IDs, the release of a day or serving.
"""
