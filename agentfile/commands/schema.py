"""`agentfile schema`: the JSON Schema of the data form, generated from the model."""

from __future__ import annotations

import sys

from agentfile.commands.common import write_output
from agentfile.errors import EXIT_OK
from agentfile.manifest.validate import schema_text


def schema(*, output: str | None) -> int:
    text = schema_text()
    if output:
        write_output(output, text)
    else:
        sys.stdout.write(text)
    return EXIT_OK
