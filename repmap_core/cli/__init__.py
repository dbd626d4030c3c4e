"""The CLI's command groups, one module each (`python -m repmap_core <command>`; see `__main__.py`)."""
