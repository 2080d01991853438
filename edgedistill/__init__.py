"""edgedistill: take a large trained model to a small one that fits a named edge device, with proof.

Importing the package stays light (no torch, onnxruntime or LiteRT): heavy imports live inside the
functions that need them, so `edgedistill --help` answers at once.
"""

__version__ = "0.1.0"
