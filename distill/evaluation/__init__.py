"""`distill eval` and `distill stats`: pass@k on benchmarks and what the traces look like. A stage:
imports common, problems and verification, never another stage."""
