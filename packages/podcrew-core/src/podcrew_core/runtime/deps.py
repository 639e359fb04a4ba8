"""How routes reach what a service's lifespan built: one typed container per app.

The lifespan builds the service's resources into one frozen dataclass and hands it to
`provide`; the service's `deps` module declares a typed dependency for each part with
`part`, one line each:

    Store = Annotated[RunStore, part(ApiResources, lambda r: r.store)]

Routes take those aliases as parameters and never read `app.state` themselves. Every getter
is `async def`: FastAPI runs a plain `def` dependency in a worker thread, and these only read
an attribute, so a thread hop each would cost far more than the work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Request

R = TypeVar("R")
T = TypeVar("T")


def provide(app: FastAPI, resources: object) -> None:
    """Make `resources` what the app's `part` dependencies read from (call in the lifespan)."""
    app.state.resources = resources


def part(kind: type[R], pick: Callable[[R], T]) -> Any:
    """A dependency (for `Annotated[...]`) on `pick(resources)`, where `resources` is the
    `kind` the lifespan gave `provide`."""

    async def get(request: Request) -> T:
        resources = request.app.state.resources
        if not isinstance(resources, kind):  # a lifespan that provided something else
            raise TypeError(f"the app provides {type(resources).__name__}, not {kind.__name__}")
        return pick(resources)

    return Depends(get)
