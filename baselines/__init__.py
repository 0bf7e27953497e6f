"""The built-in methods, one file each. Each registers itself with ``@METHODS.register``, as a
submitted method does; importing this package imports every module in it, so a new method is a new
file here and nothing else."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
