"""`distill filter`: verified-correct traces kept, with dedup, decontamination, safety and selection.
A stage: imports common, problems and verification, never another stage."""
