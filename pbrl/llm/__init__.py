"""LLM branch: prefix-sharing DPO, attention backends and kernels, LM reward models."""
