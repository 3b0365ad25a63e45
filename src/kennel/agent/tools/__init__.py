"""The tools a worker can use: its workspace files, the web, a Python sandbox."""
