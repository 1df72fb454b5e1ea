"""Wire formats: each door's translation between its bodies and ChatRequest / ChatResult."""
