"""Corpora, file formats, the piece manifest, splits and cached token datasets."""
