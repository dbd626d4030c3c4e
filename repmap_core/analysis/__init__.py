"""Analysis on activation arrays (no models, no cache): row splits, probes and per-layer separation,
projections and custom axes, similarity (CKA, SVCCA, Procrustes) with nulls, maps between spaces,
the within-model fit, probe transfer, and intervals for every number.
"""
