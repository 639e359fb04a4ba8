"""podcrew-core: the code every podcrew service shares."""
