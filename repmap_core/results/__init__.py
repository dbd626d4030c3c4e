"""What each view shows, as frozen dataclasses built by core functions (pages and the report draw
them, bundles store them), and the last request each view computed.
"""
