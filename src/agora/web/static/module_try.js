// "Try it" for a served DEEPaaS module: the predict form is built from the module server's
// OpenAPI document (fetched through the platform at /m/<model>/…), the prediction is sent as
// multipart form data, and the answer shown as JSON, an image or a file to download.
(function () {
  "use strict";
  var root = document.getElementById("try");
  if (!root) { return; }
  var base = root.dataset.base;
  var statusLine = document.getElementById("try-status");
  var form = document.getElementById("try-form");
  var fields = document.getElementById("try-fields");
  var picker = document.getElementById("try-module");
  var pickerLabel = document.getElementById("try-module-row");
  var resultMeta = document.getElementById("try-result-meta");
  var result = document.getElementById("try-result");
  var spec = null;
  var operations = {};  // module name -> {path, schema}
  var blobUrl = null;

  function headers(extra) {
    var h = { "X-CSRF-Token": root.dataset.csrf, Accept: "application/json" };
    if (root.dataset.project) { h["X-Agora-Project"] = root.dataset.project; }
    for (var k in extra || {}) { h[k] = extra[k]; }
    return h;
  }

  function problemText(text, status) {
    try {
      var body = JSON.parse(text);
      return body.detail || body.message || (body.error && body.error.message) || text;
    } catch (e) {
      return text || ("HTTP " + status);
    }
  }

  function getJson(path) {
    return fetch(base + path, { credentials: "same-origin", headers: headers() })
      .then(function (r) {
        if (!r.ok) { return r.text().then(function (t) { throw new Error(problemText(t, r.status)); }); }
        return r.json();
      });
  }

  function resolve(schema) {
    var seen = 0;
    while (schema && schema.$ref && seen++ < 10) {
      var parts = schema.$ref.replace(/^#\//, "").split("/");
      var node = spec;
      parts.forEach(function (p) { node = node && node[p]; });
      schema = node;
    }
    return schema || {};
  }

  // The predict operations of the document: OpenAPI 3 request bodies or Swagger 2 formData.
  function findOperations() {
    var paths = spec.paths || {};
    Object.keys(paths).forEach(function (path) {
      var m = /\/v2\/models\/([^/]+)\/predict\/?$/.exec(path);
      if (!m || !paths[path].post) { return; }
      var op = paths[path].post;
      var schema = { properties: {}, required: [] };
      var content = op.requestBody && op.requestBody.content;
      if (content) {
        var media = content["multipart/form-data"] || content["application/x-www-form-urlencoded"];
        if (media) { schema = resolve(media.schema); }
      }
      (op.parameters || []).forEach(function (p) {
        p = resolve(p);
        var header = p.in === "header" && p.name.toLowerCase() === "accept";
        if (p.in !== "formData" && p.in !== "query" && !header) { return; }
        schema.properties = schema.properties || {};
        var prop = p.schema ? resolve(p.schema) : p;
        if (p.type === "file") { prop = { type: "string", format: "binary" }; }
        prop = Object.assign({ description: p.description }, prop);
        if (header) { prop["x-header"] = "Accept"; }
        schema.properties[p.name] = prop;
        if (p.required) { (schema.required = schema.required || []).push(p.name); }
      });
      operations[decodeURIComponent(m[1])] = { path: path, schema: schema };
    });
  }

  function control(name, prop, required) {
    prop = resolve(prop);
    var row = document.createElement("div");
    row.className = "field";
    var id = "arg-" + name;
    var label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = name + (required ? " *" : "");
    row.appendChild(label);
    var input;
    var type = prop.type;
    if (prop.format === "binary" || type === "file") {
      input = document.createElement("input");
      input.type = "file";
    } else if (prop.enum) {
      input = document.createElement("select");
      if (!required) { input.appendChild(new Option("", "")); }
      prop.enum.forEach(function (v) { input.appendChild(new Option(String(v), String(v))); });
    } else if (type === "boolean") {
      input = document.createElement("input");
      input.type = "checkbox";
      input.value = "true";
      input.checked = prop.default === true;
    } else if (type === "integer" || type === "number") {
      input = document.createElement("input");
      input.type = "number";
      input.step = type === "integer" ? "1" : "any";
      if (prop.minimum !== undefined) { input.min = prop.minimum; }
      if (prop.maximum !== undefined) { input.max = prop.maximum; }
    } else if (type === "array") {
      input = document.createElement("textarea");
      input.rows = 3;
      input.dataset.list = "1";
      input.placeholder = "One value per line";
    } else {
      input = document.createElement("input");
      input.type = "text";
    }
    input.id = id;
    input.name = name;
    if (prop["x-header"]) { input.dataset.header = prop["x-header"]; }
    if (required && type !== "boolean") { input.required = true; }
    if (prop.default !== undefined && prop.default !== null && type !== "boolean" && input.type !== "file") {
      input.value = Array.isArray(prop.default) ? prop.default.join("\n") : String(prop.default);
    }
    row.appendChild(input);
    if (prop.description) {
      var hint = document.createElement("span");
      hint.className = "hint";
      hint.textContent = prop.description;
      row.appendChild(hint);
    }
    return row;
  }

  function renderFields() {
    fields.textContent = "";
    var op = operations[picker.value];
    if (!op) { return; }
    var props = op.schema.properties || {};
    var required = op.schema.required || [];
    Object.keys(props).forEach(function (name) {
      fields.appendChild(control(name, props[name], required.indexOf(name) >= 0));
    });
    if (!Object.keys(props).length) {
      var p = document.createElement("p");
      p.className = "muted";
      p.textContent = "This module takes no arguments.";
      fields.appendChild(p);
    }
  }

  function collect() {
    var data = new FormData();
    Array.prototype.forEach.call(fields.querySelectorAll("input, select, textarea"), function (el) {
      if (el.dataset.header) {
        return;  // sent as a header (Accept), not a form field
      } else if (el.type === "file") {
        if (el.files.length) { data.append(el.name, el.files[0], el.files[0].name); }
      } else if (el.type === "checkbox") {
        data.append(el.name, el.checked ? "true" : "false");
      } else if (el.dataset.list) {
        el.value.split("\n").map(function (v) { return v.trim(); })
          .filter(Boolean).forEach(function (v) { data.append(el.name, v); });
      } else if (el.value !== "") {
        data.append(el.name, el.value);
      }
    });
    return data;
  }

  function show(response, started) {
    var type = (response.headers.get("content-type") || "").split(";")[0].trim();
    var took = Math.round(performance.now() - started);
    resultMeta.textContent = "HTTP " + response.status + " · " + (type || "no content type") + " · " + took + " ms";
    result.textContent = "";
    if (blobUrl) { URL.revokeObjectURL(blobUrl); blobUrl = null; }
    if (type.indexOf("json") >= 0 || type.indexOf("text/") === 0) {
      return response.text().then(function (text) {
        var pre = document.createElement("pre");
        pre.className = "try-json";
        try { pre.textContent = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { pre.textContent = text; }
        result.appendChild(pre);
      });
    }
    return response.blob().then(function (blob) {
      blobUrl = URL.createObjectURL(blob);
      if (type.indexOf("image/") === 0) {
        var img = document.createElement("img");
        img.src = blobUrl;
        img.alt = "The module's image result";
        img.className = "try-image";
        result.appendChild(img);
      }
      var a = document.createElement("a");
      a.href = blobUrl;
      a.download = "result";
      a.className = "btn";
      a.textContent = "Download the result (" + blob.size + " bytes)";
      result.appendChild(a);
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var op = operations[picker.value];
    if (!op) { return; }
    var button = document.getElementById("try-run");
    button.disabled = true;
    resultMeta.textContent = "Predicting…";
    var started = performance.now();
    var accept = fields.querySelector("[data-header=Accept]");
    fetch(base + op.path, {
      method: "POST",
      credentials: "same-origin",
      headers: headers({ Accept: accept && accept.value ? accept.value : "*/*" }),
      body: collect()
    }).then(function (r) {
      if (!r.ok) {
        return r.text().then(function (t) {
          result.textContent = "";
          resultMeta.textContent = "HTTP " + r.status + ": " + problemText(t, r.status);
        });
      }
      return show(r, started);
    }).catch(function (e) {
      resultMeta.textContent = "The prediction failed: " + e.message;
    }).finally(function () { button.disabled = false; });
  });

  picker.addEventListener("change", renderFields);

  getJson("/openapi.json").catch(function () { return getJson("/swagger.json"); })
    .then(function (doc) {
      spec = doc;
      findOperations();
      var names = Object.keys(operations).sort();
      if (!names.length) { throw new Error("the module declares no predict operation"); }
      names.forEach(function (n) { picker.appendChild(new Option(n, n)); });
      picker.hidden = pickerLabel.hidden = names.length < 2;
      renderFields();
      form.hidden = false;
      statusLine.textContent = "Fill in the arguments and press Predict.";
    })
    .catch(function (e) {
      statusLine.textContent = "Could not load the module's arguments: " + e.message;
    });
})();
