"""Studies: each study's grid, parameter checks, derived tables and verdict rules (tested).

A notebook `notebooks/NN_*.ipynb` holds the parameters, calls into its study module, plots and
prose; it writes `figures/findings_<study>.md` with :func:`verdicts.write_findings`.

==================  ===========================================================  ===========
module              study                                                        notebook
==================  ===========================================================  ===========
``overview``        the language model, its activations, a first SAE             00
``stability``       feature stability across seeds and its functional asymmetry  01
``synthetic``       a synthetic low-rank model of seed dependence                02
``hierarchical``    HierarchicalTopK against per-k SAEs                          03
``kron``            KronSAE against TopK                                         04
``flow``            cross-layer feature flow and multi-layer steering            05
==================  ===========================================================  ===========
"""
