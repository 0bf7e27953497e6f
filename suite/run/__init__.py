"""One run as stages (resolve, load, fit, evaluate, record), the evaluator and checkpoints."""
