"""End-to-end tests: the CLI, video in and out, evaluation, whole modes from a bundle."""
