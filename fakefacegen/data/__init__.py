"""Faces in: photo files and archives, packed datasets, packing photos in parallel, the built-in toy faces and
the batches training reads."""
