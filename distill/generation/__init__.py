"""`distill generate`: teacher traces, n samples per prompt, resumable. A stage: imports common,
problems and verification, never another stage."""
