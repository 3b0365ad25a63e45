"""Worker workspaces: a folder of files per worker."""
