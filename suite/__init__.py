"""mtbench: a benchmark suite for meta-learning and transfer learning in PyTorch."""

__version__ = "0.1.0"
