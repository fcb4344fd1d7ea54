"""What users run: indexing, asking, live sessions, NIAH evaluation, answerers, the CLI."""
