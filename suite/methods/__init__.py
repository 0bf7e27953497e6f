"""The Method contract, hyper-parameters, backbones and the functional building blocks methods share."""

from mtbench.methods.contract import Predictor, as_chunk_of_one, at_step, FitContext, Method, METHODS
from mtbench.methods.hparams import parse_overrides, make_hparams, quick_presets_left_out, paper_setting_left_out, report_steps, positive, non_negative, setting_key

__all__ = ['Predictor', 'as_chunk_of_one', 'at_step', 'FitContext', 'Method', 'METHODS', 'parse_overrides', 'make_hparams', 'quick_presets_left_out', 'paper_setting_left_out', 'report_steps', 'positive', 'non_negative', 'setting_key']
