"""`distill train`, `distill grpo` and `distill plan`: students from verified traces (SFT, logit KD,
on-policy) and GRPO with verifier rewards. A stage: imports common, problems and verification, never
another stage."""
