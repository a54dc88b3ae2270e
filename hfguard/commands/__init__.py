"""One module per CLI command; `common` holds the options, output and exit codes they share.

No module here imports the command group (hfguard.cli): the group imports them.
"""
