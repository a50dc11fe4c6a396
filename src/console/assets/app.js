// convgate agent console. Plain JavaScript module, no framework, no build
// step. It speaks the gateway's own WebSocket protocol (`/console/ws`,
// authenticated by the session cookie) with the conversation commands and
// the opt-in events onMessage and onConversationUpdate. Every piece of
// user-supplied text is rendered with textContent, never as HTML.

const $ = (id) => document.getElementById(id);
const EVENTS = ["onMessage", "onConversationUpdate"];

const state = {
  me: null, // {email, name, org}
  myAid: 0,
  agents: [],
  filter: "unassigned",
  open: [], // GetOpenConversations (details)
  uid: null, // conversation shown
  user: null,
  rows: new Map(), // mid -> row
  socket: null,
  pending: [], // replies are answered in order: [{resolve, reject}]
  backoff: 500,
};

// ---------------------------------------------------------------- HTTP

async function http(method, path, body) {
  const res = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  let json = {};
  try { json = await res.json(); } catch (_) { /* empty body */ }
  return { status: res.status, json };
}

// ---------------------------------------------------------------- socket

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/console/ws`);
  state.socket = ws;
  setLink("connecting…");
  ws.addEventListener("open", () => {
    ws.send(JSON.stringify({ cmd: "connect", events: EVENTS }));
  });
  ws.addEventListener("message", (m) => {
    let msg;
    try { msg = JSON.parse(m.data); } catch (_) { return; }
    if (msg.cmd === "connected") {
      state.backoff = 500;
      setLink("");
      onConnected();
      return;
    }
    if (typeof msg.cmd === "string" && /^on[A-Z]/.test(msg.cmd)) {
      onEvent(msg);
      return;
    }
    const waiter = state.pending.shift();
    if (waiter) waiter.resolve(msg);
  });
  ws.addEventListener("close", (e) => {
    for (const w of state.pending.splice(0)) w.reject(new Error("disconnected"));
    if (state.socket !== ws) return;
    state.socket = null;
    if (e.code === 1008) {
      // The session ended (signed out, expired, password changed).
      showSignIn("Your session ended. Please sign in again.");
      return;
    }
    setLink("offline — reconnecting");
    setTimeout(connect, state.backoff);
    state.backoff = Math.min(state.backoff * 2, 15000);
  });
}

/** Sends one command and resolves with its reply (ok or not). */
function cmd(name, fields = {}) {
  return new Promise((resolve, reject) => {
    const ws = state.socket;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      reject(new Error("not connected"));
      return;
    }
    state.pending.push({ resolve, reject });
    ws.send(JSON.stringify({ cmd: name, ...fields }));
  });
}

setInterval(() => {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    cmd("heartbeat").catch(() => {});
  }
}, 30000);

function setLink(text) { $("link-state").textContent = text; }

function errorText(r) {
  // The channel's own reason, when the provider gave one.
  const desc = r.whatsappErrorDesc || r.smsErrorDesc || r.telegramErrorDesc;
  return `${r.error || "failed"}${desc ? ": " + desc : ""} (error ${r.errorCode})`;
}

// ---------------------------------------------------------------- events

let refreshTimer = null;
function refreshInboxSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(loadInbox, 100);
}

function onEvent(ev) {
  switch (ev.cmd) {
    case "onMessage":
      refreshInboxSoon();
      if (ev.data && ev.data.uid === state.uid) {
        upsertRow(ev.data);
      }
      break;
    case "onConversationUpdate":
      refreshInboxSoon();
      if (ev.data && ev.data.uid === state.uid) showState(ev.data.status, ev.data.agent);
      break;
    case "onUserConversation":
      refreshInboxSoon();
      if (ev.uid === state.uid) showState("closed", "");
      break;
    case "onUserUpdate":
      if (ev.data && ev.data.uid === state.uid) loadUser();
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------- inbox

async function onConnected() {
  const agents = await cmd("GetAgents");
  if (agents.ok) {
    state.agents = agents.data;
    const me = agents.data.find((a) => a.email.toLowerCase() === state.me.email.toLowerCase());
    state.myAid = me ? me.aid : 0;
    fillTransfer();
  }
  await loadInbox();
  route();
}

async function loadInbox() {
  if (!state.socket) return;
  let r;
  try { r = await cmd("GetOpenConversations", { details: true }); } catch (_) { return; }
  if (!r.ok) return;
  state.open = r.data;
  renderInbox();
  const mine = state.open.find((c) => c.uid === state.uid);
  if (state.uid && mine) showState(mine.aid ? "assigned" : "open", mine.agent);
}

function waiting(c) {
  if (!c.last || c.last.sender !== "client") return "";
  const mins = Math.max(0, Math.round((Date.now() - Date.parse(c.ldt)) / 60000));
  if (mins < 60) return `waiting ${mins} min`;
  if (mins < 48 * 60) return `waiting ${Math.round(mins / 60)} h`;
  return `waiting ${Math.round(mins / 1440)} d`;
}

function renderInbox() {
  const list = $("conversations");
  list.replaceChildren();
  const shown = state.open.filter((c) =>
    state.filter === "all" ? true : state.filter === "mine" ? c.aid === state.myAid && c.aid !== 0 : c.aid === 0);
  shown.sort((a, b) => Date.parse(b.ldt) - Date.parse(a.ldt));
  for (const c of shown) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = `#${encodeURIComponent(c.uid)}`;
    a.dataset.uid = c.uid;
    if (c.uid === state.uid) a.setAttribute("aria-current", "true");
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = (c.user && (c.user.name || c.user.phone)) || c.uid;
    const last = document.createElement("div");
    last.className = "last";
    last.textContent = c.last ? c.last.msg : "";
    const meta = document.createElement("div");
    meta.className = "meta";
    const chan = document.createElement("span");
    chan.textContent = `${c.user ? c.user.bot : ""}${c.agent ? " · " + c.agent : ""}`;
    const wait = document.createElement("span");
    wait.textContent = waiting(c);
    meta.append(chan, wait);
    a.append(who, last, meta);
    li.append(a);
    list.append(li);
  }
  $("inbox-empty").hidden = shown.length > 0;
}

// ---------------------------------------------------------------- conversation

function route() {
  const m = location.pathname.match(/^\/console\/u\/([^/]+)$/);
  if (m) {
    openLink(m[1]);
  } else if (location.hash.length > 1) {
    openConversation(decodeURIComponent(location.hash.slice(1)));
  } else {
    closeView();
  }
}

async function openLink(link) {
  const r = await http("GET", `/console/links/${encodeURIComponent(link)}`);
  if (r.status === 200 && r.json.ok) {
    openConversation(r.json.data.uid);
  } else {
    closeView();
    $("send-error").textContent = "";
    setLink(r.status === 404 ? "That user is not in your organization." : errorText(r.json));
  }
}

function closeView() {
  state.uid = null;
  $("conversation").hidden = true;
  $("user-panel").hidden = true;
  $("app").classList.remove("open");
}

async function openConversation(uid) {
  state.uid = uid;
  state.rows = new Map();
  $("app").classList.add("open");
  $("conversation").hidden = false;
  $("user-panel").hidden = false;
  $("send-error").textContent = "";
  $("templates").hidden = true;
  $("transcript").replaceChildren();
  renderInbox();
  await loadUser();
  const r = await cmd("GetConversation", { uid, details: true });
  if (r.ok) {
    for (const row of r.data) upsertRow(row);
  }
  const c = state.open.find((x) => x.uid === uid);
  showState(c ? (c.aid ? "assigned" : "open") : "closed", c ? c.agent : "");
}

async function loadUser() {
  const uid = state.uid;
  const [u, tags, data] = await Promise.all([
    cmd("GetUser", { uid }), cmd("GetUserTags", { uid }), cmd("GetUserData", { uid }),
  ]);
  if (uid !== state.uid) return;
  if (!u.ok) { $("user-error").textContent = errorText(u); return; }
  state.user = u.data;
  $("c-title").textContent = u.data.name || u.data.phone || u.data.uid;
  $("u-name").value = u.data.name;
  $("u-phone").value = u.data.phone;
  $("u-email").value = u.data.email;
  $("u-notes").value = u.data.notes;
  const list = $("tag-list");
  list.replaceChildren();
  for (const t of (tags.ok ? tags.data : [])) {
    const name = typeof t === "string" ? t : t.name;
    const li = document.createElement("li");
    li.textContent = name;
    const x = document.createElement("button");
    x.type = "button";
    x.textContent = "×";
    x.setAttribute("aria-label", `Remove tag ${name}`);
    x.addEventListener("click", () => userChange("DeleteUserTag", { tag: name }));
    li.append(x);
    list.append(li);
  }
  $("u-data").value = data.ok ? JSON.stringify(data.data ?? {}, null, 2) : "{}";
}

const ACKS = { "-2": "not on channel", "-1": "failed", 0: "queued", 1: "sent", 2: "delivered", 3: "read" };

function upsertRow(row) {
  const prev = state.rows.get(row.mid);
  const merged = prev ? { ...prev, ...row } : row;
  state.rows.set(row.mid, merged);
  let li = document.querySelector(`#transcript li[data-mid="${CSS.escape(row.mid)}"]`);
  if (!li) {
    li = document.createElement("li");
    li.dataset.mid = row.mid;
    $("transcript").append(li);
  }
  const kind = merged.typ === "note" ? "note" : merged.sender;
  li.className = kind;
  const msg = document.createElement("div");
  msg.className = "msg";
  msg.textContent = merged.typ === "note" ? `Note: ${merged.msg}` : merged.msg;
  const info = document.createElement("div");
  info.className = "info";
  const who = merged.sender === "client" ? (merged.name || "customer") : (merged.agent || merged.sender);
  info.textContent = `${who} · ${new Date(merged.dt).toLocaleString()}`;
  li.replaceChildren(msg, info);
  if (merged.sender !== "client" && merged.typ !== "note" && merged.ack !== undefined) {
    const ack = document.createElement("span");
    ack.className = `ack${merged.ack < 0 ? " failed" : ""}`;
    ack.dataset.ack = String(merged.ack);
    ack.textContent = ` · ${ACKS[merged.ack] ?? merged.ack}${merged.errorDesc ? ": " + merged.errorDesc : ""}`;
    info.append(ack);
  }
  li.scrollIntoView({ block: "nearest" });
}

function showState(status, agent) {
  $("c-state").textContent = status === "assigned" ? `assigned to ${agent}` : status;
  const closed = status === "closed";
  for (const id of ["take", "transfer", "close", "add-note"]) $(id).disabled = closed;
}

function fillTransfer() {
  const sel = $("transfer-to");
  sel.replaceChildren();
  for (const a of state.agents) {
    const o = document.createElement("option");
    o.value = a.email;
    o.textContent = a.name ? `${a.name} <${a.email}>` : a.email;
    sel.append(o);
  }
}

async function act(name, fields, errorEl = "send-error") {
  $(errorEl).textContent = "";
  let r;
  try { r = await cmd(name, { uid: state.uid, ...fields }); } catch (e) { r = { ok: 0, error: e.message, errorCode: 0 }; }
  if (!r.ok) $(errorEl).textContent = errorText(r);
  return r;
}

async function userChange(name, fields) {
  const r = await act(name, fields, "user-error");
  if (r.ok) loadUser();
  return r;
}

async function offerTemplates() {
  const u = state.user;
  if (!u || !/^WA/.test(u.bot)) return;
  const r = await cmd("GetWhatsAppTemplate", { botID: u.botID, list: true });
  const sel = $("template");
  sel.replaceChildren();
  for (const t of (r.ok ? r.templates : [])) {
    const o = document.createElement("option");
    o.value = JSON.stringify([t.name, t.language]);
    o.textContent = `${t.name} (${t.language})`;
    sel.append(o);
  }
  $("templates").hidden = sel.options.length === 0;
}

// ---------------------------------------------------------------- sign-in

function showSignIn(message = "") {
  state.me = null;
  if (state.socket) { const ws = state.socket; state.socket = null; ws.close(); }
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("email").focus();
}

function startApp(me) {
  state.me = me;
  $("signin").hidden = true;
  $("app").hidden = false;
  $("me").textContent = `${me.name || me.email}`;
  connect();
}

// ---------------------------------------------------------------- wiring

function wire() {
  $("signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("signin-error").textContent = "";
    const r = await http("POST", "/console/session", { email: $("email").value, password: $("password").value });
    $("password").value = "";
    if (r.status === 200 && r.json.ok) startApp(r.json.data);
    else $("signin-error").textContent = r.status === 429 ? "Too many attempts: wait a minute." : "Wrong email or password.";
  });
  $("signout").addEventListener("click", async () => {
    await http("DELETE", "/console/session");
    showSignIn("Signed out.");
  });
  for (const b of document.querySelectorAll("[data-filter]")) {
    b.addEventListener("click", () => {
      state.filter = b.dataset.filter;
      for (const o of document.querySelectorAll("[data-filter]")) o.setAttribute("aria-pressed", String(o === b));
      renderInbox();
    });
  }
  $("conversations").addEventListener("click", (e) => {
    const a = e.target.closest("a[data-uid]");
    if (!a) return;
    e.preventDefault();
    history.pushState(null, "", `/console#${encodeURIComponent(a.dataset.uid)}`);
    openConversation(a.dataset.uid);
  });
  $("back").addEventListener("click", () => {
    history.pushState(null, "", "/console");
    closeView();
    renderInbox();
  });
  window.addEventListener("popstate", route);
  $("take").addEventListener("click", () => act("AssignConversation", { agentEmail: state.me.email }));
  $("transfer").addEventListener("click", () => act("AssignConversation", { agentEmail: $("transfer-to").value }));
  $("close").addEventListener("click", () => act("CloseConversation", { agentEmail: state.me.email }));
  $("reply-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("reply").value.trim();
    if (!text) return;
    const r = await act("SendTextMessage", { message: text, agentEmail: state.me.email });
    if (r.ok) { $("reply").value = ""; $("templates").hidden = true; }
    else if (r.errorCode === 3002) offerTemplates();
  });
  $("reply").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("reply-form").requestSubmit();
  });
  $("send-template").addEventListener("click", async () => {
    const [templateName, language] = JSON.parse($("template").value);
    const u = state.user;
    $("send-error").textContent = "";
    const r = await cmd("SendWhatsAppTemplate", { botID: u.botID, phone: u.phone, templateName, language, agentEmail: state.me.email });
    if (r.ok) $("templates").hidden = true;
    else $("send-error").textContent = errorText(r);
  });
  $("note-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const note = $("note").value.trim();
    if (!note) return;
    const r = await act("AddConversationNote", { note, agentEmail: state.me.email });
    if (r.ok) $("note").value = "";
  });
  $("user-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const u = state.user;
    const changes = [
      ["SetUserName", "name", $("u-name").value.trim(), u.name],
      ["SetUserPhone", "phone", $("u-phone").value.trim(), u.phone],
      ["SetUserEmail", "email", $("u-email").value.trim(), u.email],
      ["SetUserNotes", "notes", $("u-notes").value, u.notes],
    ].filter(([, , now, before]) => now !== before);
    for (const [name, field, value] of changes) {
      const r = await act(name, { [field]: value }, "user-error");
      if (!r.ok) return;
    }
    loadUser();
  });
  $("tag-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const tag = $("tag-new").value.trim();
    if (!tag) return;
    const r = await userChange("SetUserTag", { tag });
    if (r.ok) $("tag-new").value = "";
  });
  $("data-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    let data;
    try { data = JSON.parse($("u-data").value || "{}"); } catch (_) {
      $("user-error").textContent = "Custom data must be a JSON object.";
      return;
    }
    userChange("SetUserData", { data, overwrite: true });
  });
}

async function main() {
  wire();
  const r = await http("GET", "/console/session");
  if (r.status === 200 && r.json.ok) startApp(r.json.data);
  else showSignIn();
}

main();
