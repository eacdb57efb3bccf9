"""Reward learners: losses, networks, segmenters, normalizers, training, relabeling."""
