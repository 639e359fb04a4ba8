"""podcrew knowledge base."""
