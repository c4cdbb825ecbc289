"""The three agents: prompts, tool allow-lists, policies, tool wrappers, the offline chat model."""

import os

# Strict checkpoint deserialisation (CVE-2026-28277): read once, when langgraph is imported.
os.environ.setdefault("LANGGRAPH_STRICT_MSGPACK", "true")
