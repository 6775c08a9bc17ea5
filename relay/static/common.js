// What the relay dashboard's scripts (dashboard.js, users.js) share: building elements (names
// come from the network, so text only ever goes in as text nodes or attribute values), the
// session's CSRF token, and a POST that follows the relay's JSON error shape.
"use strict";
window.quorumDashboard = Object.freeze((() => {
  const $ = (id) => document.getElementById(id);
  const CSRF = document.querySelector('meta[name="quorum-csrf"]').content;

  function h(tag, props, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k.startsWith("data-") || k.startsWith("aria-")) el.setAttribute(k, v);
      else el[k] = v;
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid == null || kid === false) continue;
      el.append(kid instanceof Node ? kid : String(kid));
    }
    return el;
  }

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  // cols: labels, or {label, cls}; rows: {id, cls?, cells}.
  function table(el, cols, rows, empty) {
    const heads = cols.map((c) => (typeof c === "string" ? { label: c } : c));
    const head = h("thead", {}, h("tr", {}, heads.map((c) => h("th", { class: c.cls }, c.label))));
    const body = h("tbody", {}, rows.length
      ? rows.map((row) => h("tr", { class: row.cls, "data-id": row.id },
          row.cells.map((cell, i) => h("td", { class: heads[i].cls, "data-label": heads[i].label }, h("span", {}, cell)))))
      : h("tr", { class: "empty" }, h("td", { class: "muted", colSpan: heads.length }, empty)));
    el.replaceChildren(head, body);
  }

  // POST JSON with the CSRF token; the answer's JSON, or an Error with the relay's message.
  // A 401 means the session ended: back to the sign-in page.
  async function post(path, body) {
    const resp = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
      body: JSON.stringify(body || {}),
      credentials: "same-origin",
      cache: "no-store",
    });
    let data = null;
    try { data = await resp.json(); } catch { data = null; }
    if (resp.status === 401) {
      location.assign("/");
      throw new Error("Signed out.");
    }
    if (!resp.ok) throw new Error(data && data.error ? data.error.message : "The relay answered " + resp.status + ".");
    return data;
  }

  return { $, CSRF, h, setText, table, post };
})());
