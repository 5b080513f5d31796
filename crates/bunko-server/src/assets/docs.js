// bunko's API reference: renders /openapi.json into a readable page. No third-party code.
"use strict";
(function () {
  const el = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    return e;
  };
  const refName = (ref) => ref.split("/").pop();
  function schemaText(s, spec, depth) {
    if (!s) return "";
    if (depth > 8) return "…";
    if (s.$ref) {
      const name = refName(s.$ref);
      return name + " " + schemaText(spec.components.schemas[name], spec, depth + 1);
    }
    if (s.oneOf || s.anyOf) return (s.oneOf || s.anyOf).map((x) => schemaText(x, spec, depth + 1)).join(" | ");
    const t = Array.isArray(s.type) ? s.type.join("|") : s.type;
    if (t === "object" || s.properties) {
      const req = new Set(s.required || []);
      const props = Object.entries(s.properties || {}).map(([k, v]) =>
        "  ".repeat(depth + 1) + k + (req.has(k) ? "" : "?") + ": " + schemaText(v, spec, depth + 1));
      return props.length ? "{\n" + props.join(",\n") + "\n" + "  ".repeat(depth) + "}" : "object";
    }
    if (t === "array" || s.items) return "[" + schemaText(s.items, spec, depth + 1) + "]";
    return t || "any";
  }
  function render(spec) {
    document.getElementById("meta").textContent =
      (spec.info.description || "") + " Version " + spec.info.version + ".";
    const toc = document.getElementById("toc");
    const ops = document.getElementById("ops");
    const byTag = {};
    for (const [path, item] of Object.entries(spec.paths)) {
      for (const [method, op] of Object.entries(item)) {
        const tag = (op.tags && op.tags[0]) || "other";
        (byTag[tag] = byTag[tag] || []).push({ path, method, op });
      }
    }
    for (const [tag, list] of Object.entries(byTag)) {
      toc.append(el("a", { href: "#" + tag }, tag));
      const sec = el("section", { id: tag }, el("h2", {}, tag));
      for (const { path, method, op } of list) {
        const card = el("article", { class: "op" },
          el("h3", {}, el("span", { class: "m " + method }, method.toUpperCase()), " ", el("code", {}, path),
            op.security ? el("span", { class: "lock", title: "needs a bearer token" }, "token") : ""),
          el("p", {}, op.summary || op.description || ""));
        if (op.parameters && op.parameters.length) {
          const ul = el("ul", {});
          for (const p of op.parameters)
            ul.append(el("li", {}, el("code", {}, p.name), " (" + p.in + (p.required ? ", required" : "") + (p.schema && p.schema.type ? ", " + [].concat(p.schema.type).join("|") : "") + ") ",
              p.description || ""));
          card.append(el("h4", {}, "Parameters"), ul);
        }
        const body = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
        if (body) card.append(el("h4", {}, "Body"), el("pre", {}, schemaText(body.schema, spec, 0)));
        const rs = el("ul", {});
        for (const [code, r] of Object.entries(op.responses || {})) {
          const c = r.content && (r.content["application/json"] || Object.values(r.content)[0]);
          rs.append(el("li", {}, el("b", {}, code), " " + (r.description || ""),
            c && c.schema ? el("pre", {}, schemaText(c.schema, spec, 0)) : ""));
        }
        card.append(el("h4", {}, "Responses"), rs);
        sec.append(card);
      }
      ops.append(sec);
    }
  }
  fetch("/openapi.json").then((r) => r.json()).then(render).catch((e) => {
    document.getElementById("meta").textContent = "Could not load /openapi.json: " + e;
  });
})();
