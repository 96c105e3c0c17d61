"""Example predictors for igata and the local demo (``python -m examples.demo``)."""
