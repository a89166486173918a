// Validates Kubernetes manifests against the Kubernetes OpenAPI schema with kubernetes-models'
// validate(). Usage: node validate-k8s.js FILE.yaml...  (multi-document YAML is fine).
// Prints one JSON line per object, {"file","apiVersion","kind","name","error","object"}, where
// error is null when the object is valid; exits 1 when any object is invalid or unknown.
"use strict";
const fs = require("fs");
const YAML = require("yaml");

function modelFor(apiVersion, kind) {
  // "v1" -> kubernetes-models/v1, "apps/v1" -> kubernetes-models/apps/v1
  let mod;
  try {
    mod = require("kubernetes-models/" + apiVersion);
  } catch (e) {
    return null;
  }
  return mod[kind] || null;
}

let bad = 0;
const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node validate-k8s.js FILE.yaml...");
  process.exit(2);
}
for (const file of files) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"));
  for (const doc of docs) {
    if (doc.errors.length) {
      bad++;
      console.log(JSON.stringify({ file, error: "YAML: " + doc.errors[0].message }));
      continue;
    }
    const object = doc.toJSON();
    if (object === null) continue; // an empty document ("---" at the end)
    const { apiVersion, kind } = object;
    const name = object.metadata && object.metadata.name;
    const Model = modelFor(apiVersion, kind);
    let error = null;
    if (!Model) {
      error = "unknown apiVersion/kind " + apiVersion + "/" + kind;
    } else {
      try {
        new Model(object).validate();
      } catch (e) {
        error = e.message;
      }
    }
    if (error) bad++;
    console.log(JSON.stringify({ file, apiVersion, kind, name, error, object }));
  }
}
process.exit(bad ? 1 : 0);
