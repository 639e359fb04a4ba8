"""podcrew operator: runs `AgentRun` custom resources through the orchestrator's public API.

Handlers (`handlers.py`) are thin kopf glue; what a run goes through lives in `driver.py`,
pure decisions (spec to request, run to status, report to ConfigMap) in `resource.py`,
`status.py` and `report.py`, and every HTTP call in `clients/`.
"""
