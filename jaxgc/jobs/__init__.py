"""End-to-end jobs behind the ``jaxgc`` command line."""
