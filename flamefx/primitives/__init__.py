"""Every primitive of flamefx, one module per family (registered when flamefx is imported)."""
