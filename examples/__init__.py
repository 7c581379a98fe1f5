"""Runnable examples; ``examples.photos`` is what ``make demo`` runs through ``procpool run``."""
