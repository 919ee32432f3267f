"""The bottom layer: configuration machinery, records, model specs, the vLLM server, the HTTP client,
Hub helpers, packed log-probabilities and where shipped files live. Imports nothing else of distill."""
