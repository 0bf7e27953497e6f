"""The result document: its schema, reading and writing, provenance and integrity checks."""

from mtbench.results.schema import (SCHEMA_VERSION, NUMBER, Result, check_fields, validate, fields_table,
                                    partial_fit)
from mtbench.results.upgrade import upgrade
from mtbench.results.provenance import git_state, execution_label, provenance
from mtbench.results.io import setting_name, result_filename, write_result, read_result

__all__ = ['SCHEMA_VERSION', 'NUMBER', 'Result', 'check_fields', 'validate', 'fields_table', 'partial_fit', 'upgrade',
           'git_state', 'execution_label', 'provenance', 'setting_name', 'result_filename', 'write_result', 'read_result']
