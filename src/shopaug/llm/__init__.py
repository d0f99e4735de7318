"""shopaug.llm."""
