"""robustft's built-in plugins (importable as ``robustft_plugins``).

Each module here is listed under ``[project.entry-points.robustft]`` in ``pyproject.toml`` and is found
through that table exactly as a third-party plugin is: the core never imports these modules by name.
"""
