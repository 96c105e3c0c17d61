"""Compatibility with the original igata: ``igata.predictors`` and ``python -m igata.cli``.

New code imports from :mod:`igata_core`.
"""
