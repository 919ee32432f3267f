"""distill: distill reasoning from a teacher LLM into smaller student LLMs."""

__version__ = "0.1.0"
