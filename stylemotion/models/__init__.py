"""The PyTorch networks, nothing else. Imports only the leaf modules ``errors`` and ``shapes``."""
