"""The papers: each one run end to end (`experiments`: the recipes), the presets that reproduce them at
full or scaled size (with what each needs), and the demo tour. The protocols they run live below, beside
the analyses (`analysis.within`, `analysis.between`); nothing in repmap_core imports papers/ but the CLI.
"""
