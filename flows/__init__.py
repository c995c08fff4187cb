"""Prefect flows of the daily job (orchestration, MLflow, artifacts); the logic is in ``tarq``."""
