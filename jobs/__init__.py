"""Entry points: each parses flags into a pipeline config and runs it."""
