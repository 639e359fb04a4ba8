"""podcrew-core: the code every podcrew service shares, in three layers (import-linter
holds them apart): `contracts` (what crosses a process boundary), `runtime` (what a service
runs on) and `llm` (the model behind one interface)."""
