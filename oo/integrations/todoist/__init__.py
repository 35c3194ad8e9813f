"""Todoist: the API v1 client, incremental sync into the lake, webhook verification."""
