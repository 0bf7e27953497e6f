"""Datasets: the registry, the split contract and the built-in loaders."""

from .base import DATASETS, Dataset, Split, resolve_cache_dir, resolve_data_root

__all__ = ["DATASETS", "Dataset", "Split", "resolve_cache_dir", "resolve_data_root"]
