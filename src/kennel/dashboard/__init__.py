"""The dashboard: server-rendered pages behind every `url` the API returns."""
