"""Named configs: each module's `get_config()` returns an ml_collections ConfigDict built
from `base.base_config()`; its docstring's first line is the summary `--list` shows, and
the rest gives the command that runs it and the result to expect.

Modules in subfolders (examples/) are not named configs: pass their path to --config.
"""
