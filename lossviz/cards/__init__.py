"""One card per loss family; :mod:`lossviz.registry` lists them."""
