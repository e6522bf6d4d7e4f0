"""Makes the package importable when the distribution is not installed (pytest puts this folder on sys.path)."""
