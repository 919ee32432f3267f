"""Prompt sources: built-in tasks, local files and Hub datasets, and benchmark definitions (eval/).
Imports only distill.common."""
