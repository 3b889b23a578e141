"""Mixed-precision quantization recipes shipped with jaxgc, one module per recipe.

Each module's ``get_config()`` returns an ``ml_collections.ConfigDict`` read by
:func:`jaxgc.compress.load_recipe` (``load_recipe("w4a8")``); the files are found through
``importlib.resources``, so they work from any install, editable or not.
"""
