"""Fictures: write fiction, publish it, and watch the community update live."""
