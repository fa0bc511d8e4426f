"""Studies: each study's grid, parameter checks, derived tables and verdict rules (tested).

A notebook `notebooks/NN_*.ipynb` holds the parameters, calls into its study module, plots and
prose; it writes `figures/findings_<study>.md` with :func:`verdicts.write_findings`.

* ``overview`` (notebook 00) — the language model, its activations, a first SAE
* ``stability`` + ``stability_claims`` (01) — feature stability across seeds; the claims' tables
  and verdict rules
* ``synthetic`` + ``synthetic_claims`` (02) — a synthetic low-rank model of seed dependence; its
  verdict rules
* ``hierarchical`` (03) — HierarchicalTopK against per-k SAEs
* ``kron`` (04) — KronSAE against TopK
* ``flow`` + ``flow_claims`` (05) — cross-layer feature flow and multi-layer steering; its verdict
  rules
* ``verdicts`` — the ``Verdict`` record, findings tables and the side-by-side overview
"""
