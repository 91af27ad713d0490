"""Experiment sweeps: a matrix of cluster shapes run through compose (or the local cluster), resumable."""
