"""`agentfile convert`: between the Agentfile language and the YAML/JSON data form.

The file is converted as written (variables and includes kept), so loading the result gives
a model equal to loading the original.
"""

from __future__ import annotations

import sys
from pathlib import Path

from agentfile.commands.common import write_output
from agentfile.errors import EXIT_OK, ManifestError, UsageError
from agentfile.manifest.load import read_document
from agentfile.manifest.render import to_agentfile, to_json, to_yaml
from agentfile.manifest.validate import SCHEMA_ID


def convert(*, source: str, to: str, output: str | None) -> int:
    path = Path(source)
    if not path.is_file():
        raise UsageError(f"no such file: {source}")
    document = read_document(path, source)
    if document.problems:
        raise ManifestError(document.problems)
    doc = document.doc
    doc.pop("$schema", None)
    if to == "yaml":
        text = to_yaml(doc, SCHEMA_ID)
    elif to == "json":
        text = to_json(doc, SCHEMA_ID)
    else:
        text = to_agentfile(doc)
    if output:
        write_output(output, text)
    else:
        sys.stdout.write(text)
    return EXIT_OK
