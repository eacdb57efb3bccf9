"""Offline policies: one file per algorithm, shared networks, trainer loop, evaluation."""
