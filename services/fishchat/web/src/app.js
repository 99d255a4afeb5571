// FishChat in the browser: sign in or register over the HTTP API, then one WebSocket session
// (protocol.js) for contacts, groups and conversations with live and offline messages, delivery and
// read marks, and reconnects. Plain DOM, no framework; every id (uid, gid, version) is a BigInt.

import { Session } from "./protocol.js";

const $ = (selector) => document.querySelector(selector);

function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) element.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) element.append(child);
  }
  return element;
}

// --- the HTTP API ------------------------------------------------------------------------------------

// Group ids are snowflakes above 2^53: integers of 16+ digits become strings before JSON.parse.
function parseJSON(text) {
  return JSON.parse(text.replace(/([:\[,]\s*)(-?\d{16,})(?=\s*[,}\]])/g, '$1"$2"'));
}

class ApiError extends Error {
  constructor(code, message, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

async function api(path, params = {}, token = null) {
  const headers = { "Content-Type": "application/x-www-form-urlencoded" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const body = new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)]));
  const response = await fetch(path, { method: "POST", headers, body });
  const answer = parseJSON(await response.text());
  if (answer.code !== 0) {
    let text = answer.detail ? `${answer.message}: ${answer.detail}` : answer.message;
    const retry = response.headers.get("Retry-After");
    if (response.status === 429 && retry) text += ` (try again in ${retry} s)`;
    throw new ApiError(answer.code, text, response.status);
  }
  return answer.data;
}

async function locateWebSocket() {
  const { wsURL } = await api("/x/access/server");
  const url = new URL(wsURL, location.href);
  if (url.protocol === "http:") url.protocol = "ws:";
  if (url.protocol === "https:") url.protocol = "wss:";
  return url.href;
}

// --- state -------------------------------------------------------------------------------------------

const state = {
  me: null, // {uid: BigInt, token}
  session: null,
  conversations: new Map(), // key -> conversation
  open: null, // key of the conversation shown
  status: "offline",
  statusDetail: "",
};

const keyOf = (kind, id) => `${kind}:${id}`;

function conversation(kind, id) {
  const key = keyOf(kind, id);
  let found = state.conversations.get(key);
  if (!found) {
    found = {
      key,
      kind,
      id: BigInt(id),
      title: kind === "group" ? `Group ${id}` : `User ${id}`,
      messages: [], // entries of this conversation, by version of my timeline
      pending: [], // my sends not yet acknowledged: {msgID, body, at}
      myRead: 0n, // I have read up to this version (from this or another device)
      markedDelivered: 0n, // the delivered mark this tab last sent
      peerDelivered: 0n, // the other side has received my messages up to this version of mine
      peerRead: 0n, // ... and read them
      lastActivity: 0,
    };
    state.conversations.set(key, found);
  }
  return found;
}

function conversationOf(entry) {
  if (entry.groupID !== 0n) return conversation("group", entry.groupID);
  const peer = entry.sourceUID === state.me.uid ? entry.targetUID : entry.sourceUID;
  return conversation("user", peer);
}

function unread(conv) {
  return conv.messages.filter((m) => m.sourceUID !== state.me.uid && m.version > conv.myRead).length;
}

// --- entries from sync -------------------------------------------------------------------------------

function onEntries(entries) {
  const touched = new Set();
  for (const entry of entries) {
    const conv = conversationOf(entry);
    touched.add(conv);
    if (entry.msgType === "read" || entry.msgType === "delivered") {
      applyReceipt(conv, entry);
      continue;
    }
    if (!conv.messages.some((m) => m.version === entry.version)) {
      conv.messages.push(entry);
      conv.pending = conv.pending.filter((p) => p.msgID !== entry.msgID || entry.sourceUID !== state.me.uid);
    }
    conv.lastActivity = Math.max(conv.lastActivity, Number(entry.timestamp));
  }
  for (const conv of touched) {
    conv.messages.sort((a, b) => (a.version < b.version ? -1 : a.version > b.version ? 1 : 0));
    acknowledge(conv);
  }
  render();
}

// A receipt names the marked message by its server id, which is the same in every copy: find my copy,
// whose version (in my timeline) bounds what the mark covers of my messages.
function applyReceipt(conv, entry) {
  if (entry.sourceUID === state.me.uid) {
    if (entry.msgType === "read") conv.myRead = maxBig(conv.myRead, entry.markVersion);
    return;
  }
  const marked = conv.messages.find((m) => m.serverMsgID === entry.markServerMsgID);
  if (!marked) return;
  if (entry.msgType === "read") conv.peerRead = maxBig(conv.peerRead, marked.version);
  conv.peerDelivered = maxBig(conv.peerDelivered, marked.version);
}

const maxBig = (a, b) => (a > b ? a : b);

// Tell the other side what reached this browser, and what the user has seen (the open conversation
// while the page is visible).
function acknowledge(conv) {
  const session = state.session;
  if (!session || !session.online) return;
  const theirs = conv.messages.filter((m) => m.sourceUID !== state.me.uid);
  if (!theirs.length) return;
  const newest = conv.messages[conv.messages.length - 1].version;
  const visible = state.open === conv.key && document.visibilityState === "visible";
  if (visible && unread(conv) > 0) {
    conv.myRead = newest;
    session.mark("read", conv, newest).catch((error) => console.warn("read mark", error));
  } else if (theirs[theirs.length - 1].version > conv.markedDelivered) {
    conv.markedDelivered = newest;
    session.mark("delivered", conv, newest).catch((error) => console.warn("delivered mark", error));
  }
}

// --- actions -----------------------------------------------------------------------------------------

function deviceName() {
  let device = localStorage.getItem("fishchat.device");
  if (!device) {
    device = `web-${Math.random().toString(36).slice(2, 10)}`;
    localStorage.setItem("fishchat.device", device);
  }
  return device;
}

function startSession(uid, token) {
  state.me = { uid: BigInt(uid), token };
  sessionStorage.setItem("fishchat.login", JSON.stringify({ uid: String(uid), token }));
  state.session = new Session({
    uid,
    token,
    device: deviceName(),
    locate: locateWebSocket,
    onEntries,
    onState(status, detail = "") {
      state.status = status;
      state.statusDetail = detail;
      if (status === "online") for (const conv of state.conversations.values()) acknowledge(conv);
      render();
    },
    onEnded(reason) {
      signOut(reason);
    },
  });
  state.session.start();
  render();
}

function signOut(reason = "") {
  state.session?.stop();
  state.session = null;
  state.me = null;
  state.conversations.clear();
  state.open = null;
  sessionStorage.removeItem("fishchat.login");
  renderSignIn(reason);
}

async function signIn(form, register) {
  const uid = form.uid.value.trim();
  const password = form.password.value;
  const error = form.querySelector(".error");
  error.textContent = "";
  try {
    if (!/^[1-9][0-9]{0,18}$/.test(uid)) throw new Error("the user id is a positive number");
    if (register) await api("/x/user/register", { uid, name: form.name.value.trim() || `user-${uid}`, pw: password });
    const { token } = await api("/x/user/auth", { uid, pw: password });
    startSession(uid, token);
  } catch (failure) {
    error.textContent = failure.message;
  }
}

async function logOut() {
  const token = state.me?.token;
  signOut("signed out");
  if (token) await api("/x/user/logout", {}, token).catch(() => {});
}

function openConversation(conv) {
  state.open = conv.key;
  acknowledge(conv);
  render();
  $("#composer textarea")?.focus();
}

function send(conv, body) {
  const text = body.trim();
  if (!text || !state.session) return;
  const { msgID, ack } = state.session.send(conv, text);
  conv.pending.push({ msgID, body: text, at: Date.now(), failed: "" });
  conv.lastActivity = Date.now();
  ack
    .then(() => state.session?.sync())
    .catch((failure) => {
      const pending = conv.pending.find((p) => p.msgID === msgID);
      if (pending) pending.failed = failure.text || failure.message;
      render();
    });
  render();
}

async function sidebarAction(action, input) {
  const value = input.value.trim();
  const error = $("#sidebar .error");
  error.textContent = "";
  try {
    if (action === "chat") {
      if (!/^[1-9][0-9]{0,18}$/.test(value)) throw new Error("a user id is a positive number");
      openConversation(conversation("user", BigInt(value)));
    } else if (action === "create") {
      if (!value) throw new Error("name the group");
      const group = await api("/x/group/create", { name: value }, state.me.token);
      const conv = conversation("group", BigInt(group.gid));
      conv.title = group.name;
      openConversation(conv);
    } else if (action === "join") {
      if (!/^[1-9][0-9]{0,19}$/.test(value)) throw new Error("a group id is a positive number");
      await api("/x/group/join", { gid: value }, state.me.token);
      openConversation(conversation("group", BigInt(value)));
    }
    input.value = "";
  } catch (failure) {
    error.textContent = failure.message;
  }
}

// --- rendering ---------------------------------------------------------------------------------------

const time = (ms) => new Date(Number(ms)).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

function renderSignIn(reason = "") {
  const root = $("#root");
  root.replaceChildren(
    h(
      "main",
      { class: "sign-in" },
      h("h1", {}, "FishChat"),
      reason ? h("p", { class: "notice" }, reason) : null,
      h(
        "form",
        {
          id: "sign-in",
          onsubmit: (event) => {
            event.preventDefault();
            signIn(event.target, event.submitter?.value === "register");
          },
        },
        h("label", {}, "User id", h("input", { name: "uid", inputmode: "numeric", autocomplete: "username", required: true })),
        h("label", {}, "Name (to register)", h("input", { name: "name", autocomplete: "nickname" })),
        h("label", {}, "Password", h("input", { name: "password", type: "password", autocomplete: "current-password", required: true })),
        h("div", { class: "buttons" },
          h("button", { type: "submit", value: "signin", id: "sign-in-button" }, "Sign in"),
          h("button", { type: "submit", value: "register", id: "register-button", class: "secondary" }, "Register"),
        ),
        h("p", { class: "error", role: "alert" }),
      ),
    ),
  );
}

function statusLine() {
  const labels = { online: "Online", connecting: "Connecting…", offline: "Offline" };
  return h("span", { class: `status ${state.status}`, id: "status", title: state.statusDetail },
    labels[state.status] ?? state.status, state.statusDetail ? ` — ${state.statusDetail}` : "");
}

function renderSidebar() {
  const conversations = [...state.conversations.values()].sort((a, b) => b.lastActivity - a.lastActivity);
  const field = (action, placeholder, label) => {
    const input = h("input", { placeholder, "aria-label": placeholder, id: `${action}-input` });
    return h("form", { class: "inline", onsubmit: (event) => { event.preventDefault(); sidebarAction(action, input); } },
      input, h("button", { type: "submit", id: `${action}-button` }, label));
  };
  return h("aside", { id: "sidebar" },
    h("header", {}, h("strong", {}, `User ${state.me.uid}`), statusLine(),
      h("button", { class: "link", id: "sign-out", onclick: logOut }, "Sign out")),
    field("chat", "user id", "Chat"),
    field("create", "new group name", "Create"),
    field("join", "group id", "Join"),
    h("p", { class: "error", role: "alert" }),
    h("nav", {}, h("ul", { id: "conversations" }, conversations.map((conv) => {
      const count = unread(conv);
      return h("li", { class: conv.key === state.open ? "selected" : "", "data-key": conv.key,
        onclick: () => openConversation(conv) },
        h("span", { class: "title" }, conv.title),
        count ? h("span", { class: "badge" }, String(count)) : null);
    }))),
  );
}

function mark(conv, message) {
  if (message.sourceUID !== state.me.uid) return null;
  if (message.version <= conv.peerRead) return h("span", { class: "mark read", title: "read" }, "✓✓ read");
  if (message.version <= conv.peerDelivered) return h("span", { class: "mark delivered", title: "delivered" }, "✓✓");
  return h("span", { class: "mark sent", title: "sent" }, "✓");
}

function renderConversation() {
  const conv = state.conversations.get(state.open);
  if (!conv) {
    return h("section", { id: "conversation", class: "empty" },
      h("p", {}, "Pick a conversation, or start one with a user id."));
  }
  const bubbles = conv.messages.map((message) => {
    const mine = message.sourceUID === state.me.uid;
    return h("li", { class: mine ? "mine" : "theirs", "data-version": String(message.version) },
      conv.kind === "group" && !mine ? h("span", { class: "from" }, `User ${message.sourceUID}`) : null,
      h("span", { class: "body" }, message.msg),
      h("span", { class: "meta" }, time(message.timestamp), " ", mark(conv, message)));
  });
  const pending = conv.pending.map((item) =>
    h("li", { class: `mine pending${item.failed ? " failed" : ""}` },
      h("span", { class: "body" }, item.body),
      h("span", { class: "meta" }, item.failed ? `not sent: ${item.failed}` : "sending…")));
  const submit = () => {
    const text = textarea.value;
    textarea.value = ""; // before send() renders, which keeps the draft of the composer
    send(conv, text);
  };
  const textarea = h("textarea", { rows: 2, placeholder: "Message", "aria-label": "Message", id: "message-input",
    onkeydown: (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        submit();
      }
    } });
  return h("section", { id: "conversation" },
    h("header", {}, h("h2", {}, conv.title), conv.kind === "group" ? h("span", { class: "gid" }, `id ${conv.id}`) : null),
    h("ol", { id: "messages" }, bubbles, pending),
    h("form", { id: "composer", onsubmit: (event) => { event.preventDefault(); submit(); } },
      textarea, h("button", { type: "submit", id: "send-button" }, "Send")));
}

function render() {
  if (!state.me) return;
  const focused = document.activeElement?.id;
  const draft = $("#composer textarea")?.value ?? "";
  $("#root").replaceChildren(h("div", { class: "app" }, renderSidebar(), renderConversation()));
  const textarea = $("#composer textarea");
  if (textarea) textarea.value = draft;
  if (focused) document.getElementById(focused)?.focus();
  const list = $("#messages");
  if (list) list.scrollTop = list.scrollHeight;
}

document.addEventListener("visibilitychange", () => {
  const conv = state.conversations.get(state.open);
  if (conv) acknowledge(conv);
});

const saved = sessionStorage.getItem("fishchat.login");
if (saved) {
  const { uid, token } = JSON.parse(saved);
  startSession(uid, token);
} else {
  renderSignIn();
}
