"""Torch-model helpers: forward capture of named layers, layer discovery, selection and pooling."""
