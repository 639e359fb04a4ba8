"""podcrew-client: podcrew's run API from Python, sync (`Podcrew`) and async (`AsyncPodcrew`).

The models are the server's own wire schemas (`Run`, `RunAccepted`, `Feedback`, `Estimate`),
and the errors podcrew's own classes, rebuilt from each problem's `type`.
"""

from podcrew_client._client import AsyncPodcrew, AsyncRuns, Podcrew, Runs
from podcrew_client._errors import APIConnectionError, APITimeoutError, StreamEnded
from podcrew_client._events import RunEvent
from podcrew_core.contracts.errors import (
    BadRequest,
    Conflict,
    FeedbackExists,
    NotFound,
    Overloaded,
    PodcrewError,
    RateLimited,
    RunNotFinished,
    RunNotFound,
    Unauthorized,
    UnknownProblem,
    ValidationFailed,
)
from podcrew_core.contracts.schemas import (
    Estimate,
    EventType,
    Feedback,
    Run,
    RunAccepted,
    RunStatus,
)

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "AsyncPodcrew",
    "AsyncRuns",
    "BadRequest",
    "Conflict",
    "Estimate",
    "EventType",
    "Feedback",
    "FeedbackExists",
    "NotFound",
    "Overloaded",
    "Podcrew",
    "PodcrewError",
    "RateLimited",
    "Run",
    "RunAccepted",
    "RunEvent",
    "RunNotFinished",
    "RunNotFound",
    "RunStatus",
    "Runs",
    "StreamEnded",
    "Unauthorized",
    "UnknownProblem",
    "ValidationFailed",
]
