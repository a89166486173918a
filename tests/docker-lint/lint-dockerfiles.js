// Lints Dockerfiles with dockerfile-utils (the validator behind the VS Code Docker extension).
// Usage: node lint-dockerfiles.js FILE...   Prints one JSON line per file:
// {"file":..., "diagnostics":[{"line":N,"severity":N,"code":...,"message":...}]}
// and exits 1 when any file has a diagnostic of any severity.
"use strict";
const fs = require("fs");
const { validate, ValidationSeverity } = require("dockerfile-utils");

// Every check the library has, at its strictest: a warning fails like an error.
const settings = {
  deprecatedMaintainer: ValidationSeverity.ERROR,
  directiveCasing: ValidationSeverity.ERROR,
  emptyContinuationLine: ValidationSeverity.ERROR,
  instructionCasing: ValidationSeverity.ERROR,
  instructionCmdMultiple: ValidationSeverity.ERROR,
  instructionEntrypointMultiple: ValidationSeverity.ERROR,
  instructionHealthcheckMultiple: ValidationSeverity.ERROR,
  instructionJSONInSingleQuotes: ValidationSeverity.ERROR,
  instructionWorkdirRelative: ValidationSeverity.ERROR,
};

let bad = 0;
const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node lint-dockerfiles.js FILE...");
  process.exit(2);
}
for (const file of files) {
  const diagnostics = validate(fs.readFileSync(file, "utf8"), settings).map((d) => ({
    line: d.range.start.line + 1,
    severity: d.severity,
    code: d.code,
    message: d.message,
  }));
  if (diagnostics.length) bad++;
  console.log(JSON.stringify({ file, diagnostics }));
}
process.exit(bad ? 1 : 0);
