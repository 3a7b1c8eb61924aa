"""Where a target runs (SPEC 6): one module per mode, each a context manager that prepares a
Workspace, yields it, and collects and cleans up in `finally`.
"""

from __future__ import annotations

from agentfile.isolation.base import Workspace
from agentfile.isolation.none import none_workspace

__all__ = ["Workspace", "none_workspace"]
