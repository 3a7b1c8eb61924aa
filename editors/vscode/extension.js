// Starts `agentfile lsp` for Agentfiles and for Agentfile.yaml / .yml / .json manifests.
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const [command, ...args] = vscode.workspace.getConfiguration("agentfile").get("command");
  const manifests = "**/{Agentfile,agentfile}.{yaml,yml,json}";
  client = new LanguageClient(
    "agentfile",
    "Agentfile",
    { command, args },
    {
      documentSelector: [
        { scheme: "file", language: "agentfile" },
        { scheme: "file", language: "yaml", pattern: manifests },
        { scheme: "file", language: "json", pattern: manifests },
      ],
    },
  );
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
