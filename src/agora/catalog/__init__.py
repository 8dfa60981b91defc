"""The model catalog's metadata formats (``metadata``) and where entries come from (``sources``,
and ``git`` for the repositories Agora clones)."""
