"""Rasa Pro's behaviour per release: the table every version-dependent rule reads."""
