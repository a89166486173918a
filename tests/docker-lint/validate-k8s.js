// Validates Kubernetes manifests against the Kubernetes OpenAPI schema with kubernetes-models'
// validate(), strictly: a field the schema does not know (misspelt or invented), at any level,
// is an error, as the API server's strict field validation (kubectl --validate=strict) makes
// it. Usage: node validate-k8s.js FILE.yaml...  (multi-document YAML is fine).
// Prints one JSON line per object, {"file","apiVersion","kind","name","error","object"}, where
// error is null when the object is valid; exits 1 when any object is invalid or unknown.
//
// How unknown fields are found: the schema's compiled validator reads every property its schema
// names (and, for a map such as labels or ConfigMap data, every key), whether the object has it
// or not. The object is handed to it behind proxies that record each key read, at every level;
// a key of the object that the validator never read is one the schema does not know.
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

// obj behind a Proxy that adds each key read to a set; nested objects and arrays are wrapped as
// they are read. nodes gets {path, value, read} for every object and array reached.
function watched(value, path, nodes) {
  if (value === null || typeof value !== "object") return value;
  const read = new Set();
  const children = new Map();
  nodes.push({ path, value, read });
  const note = (key) => {
    if (typeof key === "string") read.add(key);
  };
  return new Proxy(value, {
    get(target, key, receiver) {
      note(key);
      const v = Reflect.get(target, key, receiver);
      if (typeof key !== "string" || v === null || typeof v !== "object" ||
          !Object.prototype.hasOwnProperty.call(target, key)) return v;
      if (!children.has(key)) {
        const sub = Array.isArray(target) ? path + "[" + key + "]" : (path ? path + "." : "") + key;
        children.set(key, watched(v, sub, nodes));
      }
      return children.get(key);
    },
    has(target, key) {
      note(key);
      return Reflect.has(target, key);
    },
    getOwnPropertyDescriptor(target, key) {
      note(key);
      return Reflect.getOwnPropertyDescriptor(target, key);
    },
  });
}

// The schema's errors, else the fields it does not know ("unknown field a.b[0].c", each).
function strictErrors(Model, object) {
  const nodes = [];
  try {
    Model.prototype.validate.call(watched(object, "", nodes));
  } catch (e) {
    return e.message;
  }
  const unknown = [];
  for (const { path, value, read } of nodes) {
    if (Array.isArray(value)) continue;
    for (const key of Object.keys(value)) {
      if (!read.has(key)) unknown.push("unknown field " + (path ? path + "." : "") + key);
    }
  }
  return unknown.length ? unknown.join(", ") : null;
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
      error = strictErrors(Model, object);
    }
    if (error) bad++;
    console.log(JSON.stringify({ file, apiVersion, kind, name, error, object }));
  }
}
process.exit(bad ? 1 : 0);
