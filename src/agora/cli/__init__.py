"""Agora's command line (`agora`): runs the server (`agora up`) and drives the REST API."""
