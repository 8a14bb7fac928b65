"""The one exception type users see: a sentence that names the file and the problem."""


class VGFSError(Exception):
    """An error caused by input or environment, reported as one line without a traceback."""
