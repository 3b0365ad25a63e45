"""The model/tool loop: runs one turn with pydantic-ai and reports it as UI stream chunks."""
