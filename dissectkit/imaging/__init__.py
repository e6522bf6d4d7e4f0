"""Probe data on disk: the raw-image reader (PNG, JPEG, TIFF, DICOM), display images, and the
file-probe base that file-backed probes build on."""
