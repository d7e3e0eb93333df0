"""Named configs: each module's `get_config()` returns a dict; its docstring gives the
command that runs it and the result to expect."""
