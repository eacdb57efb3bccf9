"""pbrl_envs: tasks (gymnasium environments) and benchmark-suite recipes for pbrl."""
