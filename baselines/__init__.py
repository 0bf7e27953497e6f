"""The built-in methods. Each registers itself with ``@METHODS.register``, as a submitted method does."""

from . import feature_extract, finetune, maml, matchingnet, protonet, reptile, scratch

__all__ = ["feature_extract", "finetune", "maml", "matchingnet", "protonet", "reptile", "scratch"]
