"""Training, evaluation and prediction recipes built on adaptkit's public API: the ``adaptkit`` command.

Each recipe is a script with a ``main(argv)``: ``adaptkit train`` (``python -m recipes.train``), ``adaptkit evaluate``,
``adaptkit predict``, ``adaptkit cost``; ``cli.py`` dispatches to them and adds ``ls`` / ``cp`` for the shipped configs
in ``recipes/configs/``. The helpers in the ``_*.py`` modules are shared by the recipes and are not a library API.
"""
