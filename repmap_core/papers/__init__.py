"""The papers: their protocols as functions (`experiments`), the presets that reproduce them at full
or scaled size (with what each needs), and the demo tour.
"""
