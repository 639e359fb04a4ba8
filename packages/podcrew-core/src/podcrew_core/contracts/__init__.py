"""What crosses a process boundary: wire schemas, errors by meaning and their problem+json
codec, and the hop (a run's deadline, budget and limits on an internal call).

The bottom layer: it imports no other part of podcrew and no web framework, so every
process, the operator included, can speak it."""
