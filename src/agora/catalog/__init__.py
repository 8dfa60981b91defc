"""The model catalog's metadata formats (``metadata``) and where entries come from (``sources``)."""
