// People panel: who belongs to the session (state.members, with roles) and who is watching
// now (meta.presence), the log of member changes, and, for those who may manage members
// (config.can_manage), the user search, role changes, removal and share links.
// Managing talks plain HTTP to the endpoints in docs/protocol.md ("Who may watch and
// control"); the room learns the result like everyone else, from `member_changed`.

import { byTestId, h, setAttr, setText } from "./dom.js";
import { EventName, MEMBER_ROLES, Role } from "./vocabulary.js";

const ROLE_ORDER = [Role.OWNER, Role.CONTROLLER, Role.VIEWER, Role.STAFF];

/** Members first (owner, controllers, viewers, by name), then people watching who are not
 * members (staff). Each row: {user, role, watching}. */
export function peopleRows(members, presenceUsers = []) {
  const watching = new Set(presenceUsers.map((u) => (typeof u === "string" ? u : u?.username)).filter(Boolean));
  const rows = Object.entries(members || {}).map(([user, role]) => ({ user, role, watching: watching.has(user) }));
  for (const user of watching) if (!(user in (members || {}))) rows.push({ user, role: Role.STAFF, watching: true });
  const rank = (role) => (ROLE_ORDER.includes(role) ? ROLE_ORDER.indexOf(role) : ROLE_ORDER.length);
  return rows.sort((a, b) => rank(a.role) - rank(b.role) || a.user.localeCompare(b.user));
}

/** One line of the change log, as a person reads it. */
export function describeChange(change, me = null) {
  const name = (user) => (user === me ? "you" : user);
  const by = change.by === null ? "The system" : change.by === me ? "You" : change.by;
  if (change.previous === null && change.link) return `${name(change.user)} joined through a link as ${change.role}`;
  if (change.previous === null) return `${by} added ${name(change.user)} as ${change.role}`;
  if (change.role === null) return `${by} removed ${name(change.user)}`;
  return `${by} made ${name(change.user)} ${change.role} (was ${change.previous})`;
}

/** The link's state in words. */
export function linkState(link) {
  const uses = link.max_uses ? `${link.uses}/${link.max_uses} used` : `${link.uses} used`;
  return link.unusable ? `${link.unusable} · ${uses}` : `${link.role} · until ${String(link.expires_at).slice(0, 16).replace("T", " ")} · ${uses}`;
}

export function createPeopleView(root, { config, toast = () => {}, fetchImpl = globalThis.fetch, requestRender = () => {} } = {}) {
  const panel = byTestId(root, "people-panel");
  if (!panel) return { render() {} };
  const list = byTestId(panel, "people-list");
  const log = byTestId(panel, "member-changes");
  const manage = byTestId(panel, "people-manage");
  const canManage = Boolean(config?.can_manage);
  manage.hidden = !canManage;
  const me = typeof config?.user === "string" ? config.user : null;
  let shown = null;
  let shownChanges = -1;
  let links = [];

  async function call(url, { method = "GET", body = null } = {}) {
    const response = await fetchImpl(url, {
      method,
      credentials: "same-origin",
      headers: body ? { "Content-Type": "application/json", "X-CSRFToken": config.csrf_token || "" } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    let data = {};
    try {
      data = await response.json();
    } catch {
      /* an empty or HTML answer */
    }
    if (!response.ok) {
      toast(data.error || `The server refused (${response.status}).`, { kind: "error", title: "People" });
      throw data;
    }
    return data;
  }

  const change = (body) => call(config.people_url, { method: "POST", body }).catch(() => null);

  // ------------------------------------------------------------ add a member (managers)
  const search = byTestId(panel, "people-search");
  const results = byTestId(panel, "search-results");
  const addRole = byTestId(panel, "add-role");
  const addForm = panel.querySelector("#people-add");
  let searchTimer = null;
  for (const role of MEMBER_ROLES) addRole.append(h("option", { value: role }, role));
  addRole.value = Role.VIEWER;
  search.addEventListener("input", () => {
    globalThis.clearTimeout(searchTimer);
    const q = search.value.trim();
    if (q.length < 2) {
      results.replaceChildren();
      return;
    }
    searchTimer = globalThis.setTimeout(async () => {
      const found = await call(`${config.search_url}?q=${encodeURIComponent(q)}`).catch(() => ({ users: [] }));
      results.replaceChildren(
        ...found.users.map((u) =>
          h("li", {}, h("button", { type: "button", class: "btn btn-ghost btn-sm", "data-testid": `search-result-${u.username}`, onclick: () => {
            search.value = u.username;
            results.replaceChildren();
          } }, u.name ? `${u.username} (${u.name})` : u.username)),
        ),
      );
    }, 200);
  });
  addForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const username = search.value.trim();
    if (!username) return;
    if (await change({ action: "add", username, role: addRole.value })) {
      search.value = "";
      results.replaceChildren();
    }
  });

  // ------------------------------------------------------------ share links (managers)
  const linkForm = panel.querySelector("#link-create");
  const linkRole = byTestId(panel, "link-role");
  const linkUrl = byTestId(panel, "link-url");
  const linkList = byTestId(panel, "links");
  for (const role of MEMBER_ROLES) linkRole.append(h("option", { value: role }, role));
  linkRole.value = Role.VIEWER;

  function renderLinks() {
    linkList.replaceChildren(
      ...links.map((link) =>
        h(
          "li",
          { "data-testid": `link-${link.id}`, "data-unusable": link.unusable || "" },
          h("span", { class: "link-state" }, `#${link.id} ${linkState(link)}`),
          link.joined.length ? h("span", { class: "muted" }, ` · joined: ${link.joined.map((j) => j.user).join(", ")}`) : null,
          link.unusable ? null : h("button", { type: "button", class: "btn btn-ghost btn-sm", "data-testid": `revoke-link-${link.id}`, onclick: async () => {
            await call(`${config.links_url}${link.id}/revoke/`, { method: "POST", body: {} }).catch(() => null);
            loadLinks();
          } }, "Revoke"),
        ),
      ),
    );
  }
  async function loadLinks() {
    if (!canManage) return;
    const data = await call(config.links_url).catch(() => null);
    if (data) {
      links = data.links;
      renderLinks();
    }
  }
  linkForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { role: linkRole.value, expires_hours: byTestId(panel, "link-hours").value, max_uses: byTestId(panel, "link-max-uses").value };
    const made = await call(config.links_url, { method: "POST", body }).catch(() => null);
    if (made) {
      linkUrl.value = made.url;
      linkUrl.hidden = false;
      linkUrl.select();
      loadLinks();
    }
  });
  loadLinks();

  // ------------------------------------------------------------ rendering
  function personRow({ user, role, watching }) {
    const controls = [];
    if (canManage && MEMBER_ROLES.includes(role)) {
      const select = h("select", { "data-testid": `role-${user}`, "aria-label": `Role of ${user}` }, ...MEMBER_ROLES.map((r) => h("option", { value: r, selected: r === role }, r)));
      select.addEventListener("change", () => change({ action: "role", username: user, role: select.value }));
      controls.push(select, h("button", { type: "button", class: "btn btn-ghost btn-sm", "data-testid": `remove-${user}`, onclick: () => change({ action: "remove", username: user }) }, "Remove"));
    } else {
      controls.push(h("span", { class: `role role-${role}` }, role));
    }
    return h(
      "li",
      { class: "person", "data-testid": `person-${user}`, "data-role": role, "data-watching": watching ? "true" : "false" },
      h("span", { class: watching ? "presence-dot on" : "presence-dot", title: watching ? "watching now" : "not here", "aria-hidden": "true" }),
      h("span", { class: "person-name" }, user === me ? `${user} (you)` : user),
      h("span", { class: "visually-hidden" }, watching ? ", watching now" : ""),
      ...controls,
    );
  }

  return {
    render({ state, meta }) {
      const rows = peopleRows(state.members, meta.presence?.users || []);
      const key = JSON.stringify(rows);
      if (key !== shown) {
        shown = key;
        list.replaceChildren(...rows.map(personRow));
        setText(byTestId(panel, "people-count"), `${rows.filter((r) => r.watching).length} watching · ${Object.keys(state.members || {}).length} members`);
      }
      const changes = state.member_changes || [];
      if (changes.length !== shownChanges) {
        const joinedSince = shownChanges >= 0 && changes.slice(shownChanges).some((c) => c.link);
        shownChanges = changes.length;
        log.replaceChildren(...changes.slice(-8).reverse().map((c) => h("li", { title: c.at }, describeChange(c, me))));
        setAttr(log, "data-count", changes.length);
        if (joinedSince) loadLinks();
      }
    },
    /** A member change arrived live: tell the person it concerns. */
    onChange(envelope) {
      if (envelope.event !== EventName.MEMBER_CHANGED || envelope.data.user !== me || envelope.data.by === me) return;
      toast(describeChange({ ...envelope.data, link: envelope.data.link ?? null }, me), { kind: "info" });
      requestRender();
    },
  };
}
