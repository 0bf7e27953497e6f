"""The built-in methods. Each registers itself with ``@METHODS.register``, as a submitted method does."""

from . import maml, protonet

__all__ = ["maml", "protonet"]
