"""Analyses: pure, tested functions that the studies combine, one idea per module.

==================  =======================================================================
``quality``         explained variance, L0, dead latents, spliced CE / loss recovered, top-k cuts
``features``        per-feature statistics: contributions, ablations, top activations, surface form
``cosine``          chunked best / top-k cosine between dictionaries, Hungarian matching
``seed_stability``  cross-seed stability scores and classes, with their null baselines
``subspaces``       effective rank, principal angles, projection overlap, random references
``pooling``         pooling decoders across seeds, and the frozen-decoder refit
``synthetic``       a low-rank synthetic activation model and identifiability metrics (study 2)
``flow``            cross-layer matching of SAE features, flow graphs, deactivation (study 5)
``steering``        steering generation with decoder directions, and offline scorers (study 5)
``convergence``     the convergence gate: has a quantity levelled off over the last doubling of tokens?
``intervals``       t / bootstrap intervals over seeds, Holm correction, agrees / disagrees / inconclusive
==================  =======================================================================
"""
