"""Training, evaluation and prediction recipes built on adaptkit's public API.

Each recipe is a script with a ``main(argv)``: ``python -m recipes.train``, ``python -m recipes.evaluate``,
``python -m recipes.predict``. Configs live in ``recipes/configs/``; the helpers in the ``_*.py`` modules are shared by
the recipes and are not a library API.
"""
