"""Every model family, one package each; genlab.registry.MODEL_MODULES says which module defines which name and
imports only the one asked for."""
