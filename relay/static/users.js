// The relay dashboard's pages for users: clusters (create, invite, join, members) and the
// account (personal tokens, sign out everywhere, and for an operator every user). It draws
// from the snapshot dashboard.js receives (event "quorum-snapshot"); names come from the
// network, so text only ever goes in as text nodes.
"use strict";
(() => {
  const { $, h, setText, table, post } = window.quorumDashboard; // (common.js)

  // A form whose submit posts and shows the answer (or the error) in place.
  function form(id, button, error, send) {
    $(id).addEventListener("submit", async (ev) => {
      ev.preventDefault();
      $(button).disabled = true;
      setText($(error), "");
      try {
        await send();
      } catch (e) {
        setText($(error), e.message);
      } finally {
        $(button).disabled = false;
      }
    });
  }

  const act = (label, cls, run, error) => h("button", { type: "button", class: cls, onclick: async (ev) => {
    ev.target.disabled = true;
    setText($(error), "");
    try { await run(); } catch (e) { setText($(error), e.message); ev.target.disabled = false; }
  } }, label);

  let snap = null;

  function renderClusters() {
    const account = snap.account;
    const places = account ? account.places : null;
    const members = account ? account.members : {};
    const suspended = new Set((account && account.suspended) || []); // their owner is disabled
    const person = Boolean(account && account.me); // the admin token's session is no person
    $("join-section").hidden = !person;
    setText($("clusters-count"), String(snap.clusters.length));
    table($("clusters"), ["Cluster", "Role", "Nodes", "Members", ""], snap.clusters.map((c) => {
      const role = places ? places[c.id] : "admin";
      const nodes = snap.fleet.filter((n) => n.cluster_id === c.id).length;
      const listed = members[c.id];
      return { id: c.id, cells: [
        c.name, suspended.has(c.id) ? role + " · suspended (owner disabled)" : role,
        String(nodes), listed ? String(listed.length) : "–",
        role === "owner" && account ? act("Invite", "quiet", async () => {
          const made = await post("/dashboard/clusters/" + encodeURIComponent(c.id) + "/invitations");
          setText($("invite-shown"), made.code);
          $("invite-created").hidden = false;
        }, "clusters-error")
        : role === "member" ? act("Leave", "danger", () => post("/dashboard/clusters/" +
            encodeURIComponent(c.id) + "/members/" + encodeURIComponent(account.me.id) + "/remove"),
          "clusters-error") : "",
      ] };
    }), "No cluster yet: create one above, then give its join token to your nodes.");
    const rows = [];
    for (const c of snap.clusters) {
      for (const m of members[c.id] || []) {
        rows.push({ id: c.id + "/" + m.user_id, cells: [
          c.name, m.name, m.role,
          m.role === "member" ? act("Remove", "danger", () =>
            post("/dashboard/clusters/" + encodeURIComponent(c.id) + "/members/" + encodeURIComponent(m.user_id) + "/remove"),
          "clusters-error") : "",
        ] });
      }
    }
    $("members-section").hidden = !person;
    table($("members"), ["Cluster", "User", "Role", ""], rows, "Nobody yet.");
  }

  function renderAccount() {
    const account = snap.account;
    $("tab-account").hidden = !account;
    if (!account) return;
    // The admin token's session has no account of its own: only the users to manage.
    const me = account.me || { id: null };
    for (const id of ["account-section", "tokens-section"]) $(id).hidden = !account.me;
    if (!account.me) {
      renderUsers(account, me);
      return;
    }
    setText($("me"), "Signed in as " + me.name + (me.email ? " <" + me.email + ">" : "") + " with " + me.provider + " · " + me.role);
    table($("tokens"), ["Token", "Name", "State", ""], account.tokens.map((t) => ({ id: t.id, cells: [
      h("code", {}, t.prefix), t.name || "–", t.state,
      t.state === "active" ? act("Revoke", "danger", () => post("/dashboard/tokens/" + encodeURIComponent(t.id) + "/revoke"), "token-error") : "",
    ] })), "No personal token.");
    renderUsers(account, me);
  }

  function renderUsers(account, me) {
    $("users-section").hidden = !account.users;
    if (account.users) {
      table($("users"), ["User", "Signed in with", "Role", "State", ""], account.users.map((u) => ({ id: u.id, cells: [
        u.name + (u.email ? " <" + u.email + ">" : ""), u.provider, u.role, u.disabled ? "disabled" : "active",
        u.id === me.id ? "" : act(u.disabled ? "Enable" : "Disable", u.disabled ? "quiet" : "danger",
          () => post("/dashboard/users/" + encodeURIComponent(u.id) + (u.disabled ? "/enable" : "/disable")), "users-error"),
      ] })), "No user.");
    }
  }

  document.addEventListener("quorum-snapshot", (ev) => {
    snap = ev.detail;
    renderClusters();
    renderAccount();
  });

  form("new-cluster", "cluster-create", "cluster-error", async () => {
    const made = await post("/dashboard/clusters", { name: $("cluster-name").value.trim() });
    setText($("cluster-token"), made.token);
    $("cluster-created").hidden = false;
    $("cluster-name").value = "";
  });
  form("join-cluster", "invite-accept", "join-error", async () => {
    await post("/dashboard/invitations/accept", { code: $("invite-code").value.trim() });
    $("invite-code").value = "";
  });
  form("new-token", "token-create", "token-error", async () => {
    const made = await post("/dashboard/tokens", { name: $("token-name").value.trim() });
    setText($("token-shown"), made.token);
    $("token-created").hidden = false;
    $("token-name").value = "";
  });
  // The shown-once secrets leave the page at "Done".
  for (const [done, box, shown] of [["cluster-done", "cluster-created", "cluster-token"],
    ["token-done", "token-created", "token-shown"], ["invite-done", "invite-created", "invite-shown"]]) {
    $(done).addEventListener("click", () => {
      setText($(shown), "");
      $(box).hidden = true;
    });
  }
})();
