"""genlab: generative models from language to images.

    import genlab
    model = genlab.load("runs/names")     # a trained run directory
    genlab.sample("runs/names", prompt="ma", max_new_tokens=50)
"""

__version__ = "0.1.0"

from genlab.api import evaluate, export, generate, interpolate, load, reconstruct, sample, train  # noqa: E402

__all__ = ["__version__", "evaluate", "export", "generate", "interpolate", "load", "reconstruct", "sample", "train"]
