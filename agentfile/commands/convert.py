"""`agentfile convert`: between the Agentfile language and the YAML/JSON data form.

The file is converted as written (variables and includes kept), so loading the result gives
a model equal to loading the original.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from agentfile.commands.common import write_output
from agentfile.errors import EXIT_OK, ManifestError, UsageError
from agentfile.manifest.load import read_document
from agentfile.manifest.locate import repository_root
from agentfile.manifest.render import to_agentfile, to_json, to_yaml
from agentfile.manifest.validate import shipped_schema_text
from agentfile.records.layout import Layout


def convert(*, source: str, to: str, output: str | None) -> int:
    path = Path(source)
    if not path.is_file():
        raise UsageError(f"no such file: {source}")
    document = read_document(path, source)
    if document.problems:
        raise ManifestError(document.problems)
    doc = document.doc
    doc.pop("$schema", None)
    schema_copy = Layout(repository_root(Path(output or "-").absolute()))
    reference = os.path.relpath(schema_copy.schema, Path(output or "-").absolute().parent)
    if to == "yaml":
        text = to_yaml(doc, reference)
    elif to == "json":
        text = to_json(doc, reference)
    else:
        text = to_agentfile(doc)
    if output:
        write_output(output, text)
    else:
        sys.stdout.write(text)
    if to != "agentfile":
        # Editors resolve `$schema` against the converted file's folder: the copy it names
        # is written once the file is (never into a folder that was not there).
        schema_copy.ensure()
        write_output(str(schema_copy.schema), shipped_schema_text())
    return EXIT_OK
