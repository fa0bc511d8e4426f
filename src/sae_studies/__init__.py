"""SAE feature studies: corpus → LM → activations → SAEs → analyses → figures."""

__version__ = "0.1.0"
