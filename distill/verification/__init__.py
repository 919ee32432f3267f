"""Verifiers: math answers (math-verify), multiple choice, code in a sandbox, an LLM judge, and the
format/language/repetition checks of a trace. Imports only distill.common."""
