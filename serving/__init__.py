"""What the app, the HTTP API and the CLI need beyond the engine."""
