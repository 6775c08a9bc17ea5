// The relay's dashboard: fleet, models, keys and usage, live over server-sent events.
// Hand-written, no library: it works offline. Every name on these pages comes from the
// network (node, model, key labels), so text only ever goes in as text nodes
// (append/textContent) or attribute values, never as markup.
"use strict";
(() => {
  const { $, h, setText, table, post } = window.quorumDashboard; // (common.js)
  const SVG = "http://www.w3.org/2000/svg";
  const PAGES = { fleet: "Fleet", models: "Models", keys: "Keys", usage: "Usage",
    clusters: "Clusters", account: "Account" };
  const view = { page: "fleet", snap: null, cluster: "", window: "24h", by: "model" };
  const armed = new Map(); // key or node id -> timer: a button waiting for its confirmation

  // -- building blocks -----------------------------------------------------------------

  function s(tag, attrs, ...kids) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    for (const kid of kids) el.append(kid);
    return el;
  }

  const col = (label, cls) => ({ label, cls });
  const muted = (text) => h("span", { class: "muted" }, text);
  const badge = (state) => h("span", { class: "state " + state }, state);
  const chips = (items) => h("span", { class: "chips" }, items);

  function duration(sec) {
    sec = Math.max(0, Math.round(sec));
    if (sec < 60) return sec + " s";
    if (sec < 3600) return Math.floor(sec / 60) + " min";
    if (sec < 86400) return Math.floor(sec / 3600) + " h " + Math.floor((sec % 3600) / 60) + " min";
    return Math.floor(sec / 86400) + " d " + Math.floor((sec % 86400) / 3600) + " h";
  }

  // Ages tick in the page between snapshots: [data-age] holds the age when it arrived.
  let arrived = performance.now();
  const ageNow = (el) => Number(el.dataset.age) + (performance.now() - arrived) / 1000;
  function ageText(el) {
    const age = ageNow(el);
    if (el.dataset.fmt === "for") return "for " + duration(age);
    if (el.dataset.fmt === "in") return age >= 0 ? "expired" : "in " + duration(-age);
    return age < 2 ? "just now" : duration(age) + " ago";
  }
  const ago = (age, fmt) => age == null ? muted("never")
    : h("span", { "data-age": String(age), "data-fmt": fmt || "" }, "");
  function tick() {
    for (const el of document.querySelectorAll("[data-age]")) setText(el, ageText(el));
  }

  const num = (v) => v == null ? "–" : v >= 1e6 ? (v / 1e6).toFixed(1) + "M"
    : v >= 1e4 ? Math.round(v / 1e3) + "k" : String(Math.round(v * 10) / 10);
  const ms = (v) => v == null ? "–" : (v < 10 ? v.toFixed(1) : Math.round(v)) + " ms";
  const clock = (t) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });

  // -- fleet ---------------------------------------------------------------------------

  function renderFleet(snap) {
    const fleet = snap.fleet;
    setText($("nodes-online"), fleet.filter((n) => n.state === "online").length + " of " + fleet.length);
    setText($("cluster-count"), String(snap.clusters.length));
    setText($("model-count"), String(snap.models.length));
    setText($("in-flight"), String(fleet.reduce((a, n) => a + (n.in_flight || 0), 0)));
    setText($("fleet-count"), String(fleet.length));
    table($("fleet"), [col("Node"), col("Cluster"), col("State"), col("Last heartbeat"), col("Route"), col("Engines and models"), col("In flight", "num"), col("")],
      fleet.map((n) => ({ id: n.node_id, cls: n.state === "online" ? "" : "off", cells: [
        [h("strong", {}, n.name), h("span", { class: "sub" }, n.node_id.slice(0, 12))],
        n.cluster,
        badge(n.state),
        ago(n.seen_s_ago),
        n.route ? [h("span", {}, "tunnel from ", h("code", {}, n.route.remote)),
          h("span", { class: "sub" }, "connected ", ago(n.route.connected_s, "for"))]
          : muted("not connected"),
        n.services.length ? n.services.map((v) => h("div", {},
          h("strong", {}, v.name), " ", muted(v.types.join(", ")), " ", chips(v.models.map((m) => h("span", { class: "chip" }, m)))))
          : muted("no model"),
        n.in_flight == null ? "–" : String(n.in_flight),
        removeButton(n),
      ] })), "No node yet: start one with quorum up --token … --relay ….");
    renderRefused(snap);
    renderRotate(snap);
  }

  // Two clicks, as for a key: the first arms the button for 5 s, the second removes.
  function removeButton(n) {
    const id = "node:" + n.cluster_id + "/" + n.node_id;
    const button = h("button", { type: "button", class: "danger" + (armed.has(id) ? " armed" : ""), "data-node": n.node_id },
      armed.has(id) ? "Confirm remove" : "Remove");
    button.addEventListener("click", () => removeNode(n, id, button));
    return button;
  }

  async function removeNode(n, id, button) {
    if (!armed.has(id)) {
      armed.set(id, setTimeout(() => { armed.delete(id); if (view.snap) renderFleet(view.snap); }, 5000));
      button.classList.add("armed");
      button.textContent = "Confirm remove";
      return;
    }
    clearTimeout(armed.get(id));
    armed.delete(id);
    button.disabled = true;
    try {
      const done = await post("/dashboard/nodes/" + encodeURIComponent(n.node_id) + "/remove", { cluster: n.cluster_id });
      setText($("node-error"), done.removed ? "" : n.name + " never joined with a key, or was removed already.");
      button.textContent = "Removed";
    } catch (e) {
      setText($("node-error"), e.message);
      button.disabled = false;
    }
  }

  function renderRefused(snap) {
    const refused = snap.refused || [];
    setText($("refused-count"), String(refused.length));
    table($("refused"), [col("Node id"), col("Cluster"), col("Key"), col("From"), col("Last refused"), col("Times", "num"), col("Why")],
      refused.map((r) => ({ id: r.node_id, cells: [
        h("code", {}, r.node_id), r.cluster,
        r.fingerprint ? h("code", { title: r.fingerprint }, r.fingerprint.slice(0, 16)) : muted("no certificate"),
        h("code", {}, r.remote), ago(r.last_s_ago), String(r.count), r.why,
      ] })), "No node connection refused since the relay started.");
  }

  // -- a cluster's join token ------------------------------------------------------------

  function renderRotate(snap) {
    fillSelect($("rotate-cluster"), snap.clusters, $("rotate-cluster").value || (snap.clusters[0] || {}).id);
  }

  async function rotate(ev) {
    ev.preventDefault();
    const button = $("rotate-go");
    if (!armed.has("rotate")) { // two clicks, as for every change that cannot be undone
      armed.set("rotate", setTimeout(() => { armed.delete("rotate"); setText(button, "Rotate token"); button.classList.remove("armed"); }, 5000));
      button.classList.add("armed");
      setText(button, "Confirm rotate");
      return;
    }
    clearTimeout(armed.get("rotate"));
    armed.delete("rotate");
    button.classList.remove("armed");
    setText(button, "Rotate token");
    button.disabled = true;
    setText($("rotate-error"), "");
    setText($("rotate-note"), "");
    try {
      const made = await post("/dashboard/clusters/" + encodeURIComponent($("rotate-cluster").value) + "/rotate",
        { grace: $("rotate-grace").value });
      // The one time the token is ever on a page: it is dropped from the DOM at "Done".
      setText($("rotated-token"), made.token);
      $("rotated").hidden = false;
      setText($("rotate-note"), "The previous token of " + made.name + " works until " +
        new Date(made.previous_accepted_until * 1000).toLocaleString() + ".");
    } catch (e) {
      setText($("rotate-error"), e.message);
    } finally {
      button.disabled = false;
    }
  }

  async function finishRotation() {
    setText($("rotate-error"), "");
    try {
      const done = await post("/dashboard/clusters/" + encodeURIComponent($("rotate-cluster").value) + "/rotate/finish", {});
      setText($("rotate-note"), done.ended
        ? "The previous token of " + done.name + " is refused from now on (" + done.closed + " tunnel(s) closed)."
        : "No previous token of " + done.name + " was still accepted.");
    } catch (e) {
      setText($("rotate-error"), e.message);
    }
  }

  function forgetRotated() {
    setText($("rotated-token"), "");
    $("rotated").hidden = true;
  }

  // -- models --------------------------------------------------------------------------

  function renderModels(snap) {
    setText($("models-count"), String(snap.models.length));
    table($("models"), [col("Model"), col("Cluster"), col("Type"), col("Held by"), col("Online", "num")],
      snap.models.map((m) => ({ cls: m.online ? "" : "off", cells: [
        h("strong", {}, m.id), m.cluster, m.types.join(", "),
        chips(m.holders.map((hd) => h("span", { class: "chip" + (hd.state === "online" ? "" : " off"), title: hd.service + " · " + hd.type },
          hd.node, hd.state === "online" ? "" : " (" + hd.state + ")"))),
        m.online + " of " + new Set(m.holders.map((hd) => hd.node_id)).size,
      ] })), "No model yet: nodes list theirs as they connect.");
  }

  // -- keys ----------------------------------------------------------------------------

  function fillSelect(el, clusters, chosen) {
    const want = clusters.map((c) => c.id + "\n" + c.name).join("\t");
    if (el.dataset.options !== want) {
      el.dataset.options = want;
      el.replaceChildren(...clusters.map((c) => h("option", { value: c.id }, c.name)));
    }
    if (chosen && el.value !== chosen) el.value = chosen;
  }

  function knownModels(snap) {
    const cluster = $("key-cluster").value;
    const names = [...new Set(snap.models.filter((m) => m.cluster_id === cluster).map((m) => m.id))].sort();
    const want = names.join("\n");
    const list = $("known-models");
    if (list.dataset.names !== want) {
      list.dataset.names = want;
      list.replaceChildren(...names.map((n) => h("option", { value: n })));
    }
  }

  function revokeButton(k) {
    const button = h("button", { type: "button", class: "danger" + (armed.has(k.id) ? " armed" : ""), "data-key": k.id },
      armed.has(k.id) ? "Confirm revoke" : "Revoke");
    button.addEventListener("click", () => revoke(k, button));
    return button;
  }

  async function revoke(k, button) {
    if (!armed.has(k.id)) {
      armed.set(k.id, setTimeout(() => { armed.delete(k.id); if (view.snap) renderKeys(view.snap); }, 5000));
      button.classList.add("armed");
      button.textContent = "Confirm revoke";
      return;
    }
    clearTimeout(armed.get(k.id));
    armed.delete(k.id);
    button.disabled = true;
    try {
      await post("/dashboard/keys/" + encodeURIComponent(k.id) + "/revoke", {});
      setText($("key-error"), "");
    } catch (e) {
      setText($("key-error"), e.message);
      button.disabled = false;
    }
  }

  function renderKeys(snap) {
    fillSelect($("key-cluster"), snap.clusters, $("key-cluster").value || (snap.clusters[0] || {}).id);
    knownModels(snap);
    const active = snap.keys.filter((k) => k.state === "active").length;
    setText($("keys-count"), active + " active" + (snap.keys.length > active ? " · " + (snap.keys.length - active) + " revoked or expired" : ""));
    const now = snap.now;
    table($("keys"), [col("Key"), col("Label"), col("Cluster"), col("Models"), col("Created"), col("Expires"), col("Last used"), col("State"), col("")],
      snap.keys.map((k) => ({ id: k.id, cls: k.state === "active" ? "" : "off", cells: [
        h("code", {}, k.prefix), k.name || muted("–"), k.cluster,
        k.models == null ? muted("all") : chips(k.models.map((m) => h("span", { class: "chip" }, m))),
        ago(now - k.created_at),
        k.expires_at == null ? muted("never") : ago(now - k.expires_at, "in"),
        k.last_used_at == null ? muted("never") : ago(now - k.last_used_at),
        badge(k.state),
        k.state === "active" ? revokeButton(k) : "",
      ] })), "No key yet: create one above for an app outside the cluster.");
  }

  async function createKey(ev) {
    ev.preventDefault();
    const models = $("key-models").value.split(",").map((m) => m.trim()).filter(Boolean);
    const body = { cluster: $("key-cluster").value, name: $("key-name").value.trim(),
      models: models.length ? models : null, expires: $("key-expires").value };
    const button = $("key-create");
    button.disabled = true;
    setText($("key-error"), "");
    try {
      const made = await post("/dashboard/keys", body);
      // The one time the key is ever on a page: it is dropped from the DOM at "Done".
      setText($("created-key"), made.key);
      setText($("created-url"), location.origin + "/v1");
      $("created").hidden = false;
      $("key-name").value = "";
      $("key-models").value = "";
    } catch (e) {
      setText($("key-error"), e.message);
    } finally {
      button.disabled = false;
    }
  }

  function forgetCreated() {
    setText($("created-key"), "");
    $("created").hidden = true;
    setText($("copy-key"), "Copy");
  }

  async function copy() {
    const text = $("created-key").textContent;
    let done = false;
    try {
      await navigator.clipboard.writeText(text);
      done = true;
    } catch {
      // Plain http from another machine is no secure context: fall back to a selection.
      const area = h("textarea", { value: text, readOnly: true, "aria-hidden": "true" });
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.append(area);
      area.select();
      done = document.execCommand("copy");
      area.remove();
    }
    setText($("copy-key"), done ? "Copied" : "Select and copy");
  }

  // -- usage charts (small hand-written SVG) -------------------------------------------

  function nice(max, whole) {
    if (!(max > 0)) return whole ? 2 : 1;
    const p = Math.pow(10, Math.floor(Math.log10(max)));
    let top = 10 * p;
    for (const m of [1, 2, 2.5, 5]) if (m * p >= max) { top = m * p; break; }
    return whole ? Math.max(2, Math.ceil(top / 2) * 2) : top;
  }

  function when(t, win) {
    const d = new Date(t);
    if (win === "1h" || win === "24h") return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    if (win === "7d") return d.toLocaleDateString([], { weekday: "short" }) + " " + d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return d.toLocaleDateString([], { month: "short", day: "numeric" });
  }

  // The frame of a chart: size from its box, a grid with three values, a few times below.
  function axes(el, u, top, fmt) {
    const W = Math.max(260, Math.floor(el.clientWidth || 560)), H = 170, L = 46, R = 8, T = 8, B = 22;
    const n = u.buckets.length, step = (W - L - R) / n, plot = H - T - B;
    const root = s("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}` });
    for (const f of [0, 0.5, 1]) {
      const y = T + plot * (1 - f);
      root.append(s("line", { class: "grid", x1: L, x2: W - R, y1: y, y2: y }),
        s("text", { x: L - 6, y: y + 4, "text-anchor": "end" }, fmt(top * f)));
    }
    const labels = Math.min(n, Math.max(2, Math.floor((W - L) / 90)));
    for (let k = 0; k < labels; k++) {
      const i = Math.round((k * (n - 1)) / (labels - 1));
      const anchor = k === 0 ? "start" : k === labels - 1 ? "end" : "middle";
      const x = k === 0 ? L : k === labels - 1 ? W - R : L + step * (i + 0.5);
      root.append(s("text", { x, y: H - 6, "text-anchor": anchor }, when(u.buckets[i], u.window)));
    }
    return { root, step, L, T, plot, y: (v) => T + plot * (1 - v / top) };
  }

  function legend(groups) {
    return h("ul", { class: "legend" }, groups.map((g, gi) => h("li", {}, h("span", { class: "swatch s" + gi }), g.label)));
  }

  function bars(el, u, groups, idx, unit) {
    const totals = u.buckets.map((_, i) => groups.reduce((a, g) => a + (g.points[i][idx] || 0), 0));
    const most = Math.max(0, ...totals);
    if (!most) {
      el.replaceChildren(h("p", { class: "empty-chart" }, "No " + unit + " in this window."));
      return;
    }
    const top = nice(most, true);
    const { root, step, L, T, plot } = axes(el, u, top, num);
    u.buckets.forEach((b, i) => {
      let y = T + plot;
      groups.forEach((g, gi) => {
        const v = g.points[i][idx] || 0;
        if (!v) return;
        const height = (v / top) * plot;
        y -= height;
        root.append(s("rect", { class: "s" + gi, x: L + i * step + step * 0.15, y, width: Math.max(1, step * 0.7), height: Math.max(1, height) },
          s("title", {}, g.label + " · " + when(b, u.window) + ": " + num(v) + " " + unit)));
      });
    });
    el.replaceChildren(root, legend(groups));
  }

  function lines(el, u, groups, idx) {
    const values = groups.flatMap((g) => g.points.map((p) => p[idx]).filter((v) => v != null));
    if (!values.length) {
      el.replaceChildren(h("p", { class: "empty-chart" }, "No answer in this window."));
      return;
    }
    const top = nice(Math.max(...values), false);
    const { root, step, L, y } = axes(el, u, top, (v) => Math.round(v) + " ms");
    groups.forEach((g, gi) => {
      let run = [];
      const flush = () => {
        if (run.length > 1) root.append(s("polyline", { class: "line s" + gi, points: run.join(" ") }));
        run = [];
      };
      g.points.forEach((p, i) => {
        const v = p[idx];
        if (v == null) { flush(); return; }
        const x = L + step * (i + 0.5);
        run.push(x.toFixed(1) + "," + y(v).toFixed(1));
        root.append(s("circle", { class: "s" + gi, cx: x, cy: y(v), r: 3 },
          s("title", {}, g.label + " · " + when(u.buckets[i], u.window) + ": " + ms(v))));
      });
      flush();
    });
    el.replaceChildren(root, legend(groups));
  }

  function pressed(group, attr, value) {
    for (const b of $(group).querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset[attr] === value));
  }

  function renderUsage() {
    const snap = view.snap;
    if (!snap) return;
    const u = snap.usage;
    fillSelect($("usage-cluster"), snap.clusters, u ? u.cluster_id : "");
    pressed("usage-window", "window", view.window);
    pressed("usage-by", "by", view.by);
    const title = { model: "By model", node: "By node", key: "By key" }[view.by];
    setText($("usage-title"), title);
    if (!u) {
      for (const id of ["total-requests", "total-tokens", "total-errors", "total-ttfb"]) setText($(id), "–");
      for (const id of ["chart-requests", "chart-tokens", "chart-ttfb"]) $(id).replaceChildren(muted("No cluster yet."));
      table($("usage-table"), [col(title)], [], "No cluster yet.");
      table($("recent"), [col("Time")], [], "No cluster yet.");
      return;
    }
    setText($("total-requests"), num(u.totals.requests));
    setText($("total-tokens"), num(u.totals.total_tokens));
    setText($("total-errors"), num(u.totals.errors));
    setText($("total-ttfb"), ms(u.totals.avg_ttfb_ms));
    const groups = u.by[view.by];
    bars($("chart-requests"), u, groups, 0, "requests");
    bars($("chart-tokens"), u, groups, 1, "tokens");
    lines($("chart-ttfb"), u, groups, 2);
    table($("usage-table"), [col(view.by[0].toUpperCase() + view.by.slice(1)), col("Requests", "num"), col("Errors", "num"),
      col("Prompt tokens", "num"), col("Completion tokens", "num"), col("Avg. TTFB", "num")],
      groups.map((g, gi) => ({ cells: [
        h("span", {}, h("span", { class: "swatch s" + gi }), " ", g.label),
        num(g.requests), num(g.errors), num(g.prompt_tokens), num(g.completion_tokens), ms(g.avg_ttfb_ms),
      ] })), "No request in this window.");
    table($("recent"), [col("Time"), col("Model"), col("Node"), col("Key"), col("Status", "num"), col("Tokens", "num"), col("TTFB", "num"), col("Total", "num")],
      u.recent.map((r) => ({ cells: [
        clock(r.time_ms), r.model || muted("–"), r.node || muted("–"), r.key,
        [h("span", { class: r.status < 400 ? "ok" : "bad" }, String(r.status)), r.error ? h("span", { class: "sub" }, r.error) : ""],
        num(r.tokens), ms(r.ttfb_ms), ms(r.duration_ms),
      ] })), "No request yet: send one to this relay's /v1 with an API key.");
  }

  // -- pages, live stream --------------------------------------------------------------

  function render(snap) {
    arrived = performance.now();
    view.snap = snap;
    if (snap.usage) view.cluster = snap.usage.cluster_id;
    renderFleet(snap);
    renderModels(snap);
    renderKeys(snap);
    if (view.page === "usage") renderUsage();
    tick();
    document.dispatchEvent(new CustomEvent("quorum-snapshot", { detail: snap })); // users.js
  }

  function showPage() {
    const want = location.hash.slice(1);
    view.page = want in PAGES ? want : "fleet";
    for (const p of Object.keys(PAGES)) $("page-" + p).hidden = p !== view.page;
    for (const a of document.querySelectorAll("#tabs a")) {
      a.classList.toggle("current", a.dataset.page === view.page);
      if (a.dataset.page === view.page) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    document.title = PAGES[view.page] + " · Quorum relay";
    if (view.page === "usage") renderUsage();
  }

  function live(cls, text) {
    const el = $("live");
    el.className = "live " + cls;
    setText(el, text);
  }

  let source = null;
  function connect() {
    if (source) source.close();
    const query = new URLSearchParams({ window: view.window });
    if (view.cluster) query.set("cluster", view.cluster);
    const mine = source = new EventSource("/dashboard/events?" + query);
    mine.addEventListener("open", () => live("on", "live"));
    mine.addEventListener("snapshot", (ev) => {
      live("on", "live");
      render(JSON.parse(ev.data));
    });
    mine.addEventListener("signedout", () => {
      mine.close();
      location.assign("/");
    });
    mine.addEventListener("error", () => {
      if (mine !== source) return;
      if (mine.readyState === EventSource.CLOSED) {
        live("off", "disconnected");
        setTimeout(checkSession, 3000);
      } else {
        live("", "reconnecting…");
      }
    });
  }

  // A stream refused for good is either a lost session (sign in again) or a relay away.
  async function checkSession() {
    try {
      const resp = await fetch("/dashboard/session", { cache: "no-store" });
      if (resp.status === 401) {
        location.assign("/");
        return;
      }
    } catch {
      // The relay is away: try the stream again below.
    }
    connect();
  }

  $("new-key").addEventListener("submit", createKey);
  $("key-cluster").addEventListener("change", () => view.snap && knownModels(view.snap));
  $("copy-key").addEventListener("click", copy);
  $("created-done").addEventListener("click", forgetCreated);
  $("rotate").addEventListener("submit", rotate);
  $("rotate-finish").addEventListener("click", finishRotation);
  $("rotated-done").addEventListener("click", forgetRotated);
  $("usage-cluster").addEventListener("change", () => {
    view.cluster = $("usage-cluster").value;
    connect();
  });
  for (const b of $("usage-window").querySelectorAll("button")) {
    b.addEventListener("click", () => {
      view.window = b.dataset.window;
      pressed("usage-window", "window", view.window);
      connect();
    });
  }
  for (const b of $("usage-by").querySelectorAll("button")) {
    b.addEventListener("click", () => {
      view.by = b.dataset.by;
      renderUsage();
    });
  }
  let resizing = 0;
  window.addEventListener("resize", () => {
    cancelAnimationFrame(resizing);
    resizing = requestAnimationFrame(() => view.page === "usage" && renderUsage());
  });
  window.addEventListener("hashchange", showPage);
  showPage();
  setInterval(tick, 1000);
  connect();
})();
