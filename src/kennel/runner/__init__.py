"""The queue's front door: claims jobs under a lease and hands each to its service."""
