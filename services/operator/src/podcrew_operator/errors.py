"""Errors by meaning. The handlers turn each into kopf's verdict exactly once:
`Retryable` ones into `kopf.TemporaryError(delay=...)`, the rest into `kopf.PermanentError`."""

from __future__ import annotations


class OperatorError(Exception):
    """Base of every error the operator raises on purpose."""


class InvalidSpec(OperatorError):
    """The AgentRun's spec cannot become a run; asking again will not change that."""


class Retryable(OperatorError):
    """A call failed in a way a later attempt can fix; `retry_after_s` is the server's advice."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class OrchestratorUnavailable(Retryable):
    """The orchestrator API is unreachable, overloaded (503), limiting (429) or failing (5xx)."""


class OrchestratorUnauthorized(Retryable):
    """The API key was refused (401). Retried: the fix is the operator's Secret, not the run."""


class OrchestratorRejected(OperatorError):
    """The orchestrator refused the run itself (400, 409 on another body, 413, 422)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class RunLost(OperatorError):
    """The orchestrator no longer knows the run (its record expired, or the key changed tenant)."""


class KubernetesUnavailable(Retryable):
    """The Kubernetes API failed in a way that can pass (5xx, 429, connection, 401 before
    the next login)."""


class KubernetesRejected(OperatorError):
    """The Kubernetes API refused a request (403, 422, ...); repeating it will not help."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class ObjectGone(OperatorError):
    """The AgentRun was deleted while the operator was working on it."""


class ConfigMapNotOwned(OperatorError):
    """The report's ConfigMap exists and belongs to something else: it is never overwritten."""
