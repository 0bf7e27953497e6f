"""Datasets: the registry, the split contract and the built-in loaders."""

from mtbench.data.base import DATASETS, Check, Dataset, Split, VerifyReport, resolve_cache_dir, resolve_data_root

__all__ = ["DATASETS", "Check", "Dataset", "Split", "VerifyReport", "resolve_cache_dir", "resolve_data_root"]
