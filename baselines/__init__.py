"""The built-in methods, one file each. Each registers itself with ``@METHODS.register``, as a
submitted method does; the registry imports every module of this package (``mtbench.baselines.*``),
so a new method is a new file here and nothing else."""
