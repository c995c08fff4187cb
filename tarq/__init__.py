"""tarq: TARQ pre-ranking (target attention by residual quantization) in a daily ML workflow."""

__version__ = "0.1.0"
