"""The result document: its schema, reading and writing, provenance and integrity checks."""

from mtbench.results.schema import SCHEMA_VERSION, NUMBER, SCHEMA, check_fields, validate, git_state, execution, execution_label, provenance, setting_name, result_filename, write_result, read_result

__all__ = ['SCHEMA_VERSION', 'NUMBER', 'SCHEMA', 'check_fields', 'validate', 'git_state', 'execution', 'execution_label', 'provenance', 'setting_name', 'result_filename', 'write_result', 'read_result']
