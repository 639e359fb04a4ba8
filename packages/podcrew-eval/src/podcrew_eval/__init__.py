"""podcrew's evaluation library: score cited research reports and gate on a baseline.

Pure functions over what `GET /v1/runs/{id}` returns and the text of the cited passages; no
web framework, model SDK or podcrew service. `podcrew eval` (podcrew-cli) runs a dataset
against a stack and uses these to score it; docs/evaluation.md defines every score.
"""
