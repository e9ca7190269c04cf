"""Runnable examples of nncf-jax; `digits` is the README's main job.

They need the ``examples`` extra (``pip install 'nncf-jax[examples]'``),
which brings scikit-learn for its bundled digits data set.
"""
