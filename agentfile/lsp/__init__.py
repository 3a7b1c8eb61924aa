"""`agentfile lsp`: the language server for Agentfiles and their YAML/JSON form.

`server.py` is the only module that knows pygls and the protocol's types; `index.py`,
`answers.py` and `diagnose.py` answer in plain values (0-based lines, columns in characters),
from the manifest's own reader and loader.
"""
