"""Errors that are the user's to fix.

A :class:`UserError` carries a message that says what is wrong and what to do about it. The CLI
prints it on one line and exits with a non-zero code, without a traceback; anything else that
escapes is a bug in mtbench and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input or environment, explained in one line with its fix."""


class DownloadError(UserError):
    """A download or checksum verification failed; the message says how to fetch the file by hand."""
