"""The built-in methods. Each registers itself with ``@METHODS.register``, as a submitted method does."""

from . import dann, feature_extract, finetune, maml, matchingnet, protonet, reptile, scratch

__all__ = ["dann", "feature_extract", "finetune", "maml", "matchingnet", "protonet", "reptile", "scratch"]
