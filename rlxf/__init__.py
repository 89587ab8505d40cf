"""rlxf: train language models from feedback of every kind."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``rlxf.dpo``, ``rlxf.grpo``, ... (see `rlxf.api`), imported on first use: ``import rlxf.data``
    stays light."""
    import importlib

    if name.startswith("__"):
        raise AttributeError(name)
    api = importlib.import_module("rlxf.api")
    functions = api.recipe_functions()
    if name in functions:
        return functions[name]
    if name in ("train", "Trained"):
        return getattr(api, name)
    raise AttributeError(f"module 'rlxf' has no attribute {name!r}")
