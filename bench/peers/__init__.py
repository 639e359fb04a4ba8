"""Peers podcrew is compared with in `make bench`, each serving the same pipeline."""
