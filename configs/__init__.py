"""Job configs shipped with jaxgc (installed as the package ``jaxgc.configs``).

Name one without a path, ``jaxgc compress --config cyclegan_h2z_ptq``, or pass a file path,
``--config configs/cyclegan_h2z_ptq.py``. Each module's ``get_config()`` returns an
``ml_collections.ConfigDict``; its docstring holds the command that runs it.
"""
