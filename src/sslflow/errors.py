class SslflowError(Exception):
    """A problem with the user's input (data, params, files): reported as one line, exit code 2."""
