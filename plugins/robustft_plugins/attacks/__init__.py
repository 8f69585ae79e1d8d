"""Built-in attack families (``apgd``), registered through the ``register_attacks`` hook."""
