/* Airia Conversations web console: plain JavaScript, no build step, same origin.
 *
 * Views are chosen by the URL's hash: "#/" is the feed, "#/c/<id>" a conversation.
 * Credentials live in sessionStorage (this tab only). Every error shown is the
 * problem's `message` (application/problem+json).
 */
"use strict";

(function () {
  const STORE_KEY = "airia.console.auth";
  let feedPageSize = 20; // lowered to the server's AIRIA_FEED_MAX_PAGE_SIZE if that is less
  const MESSAGE_PAGE = 50;
  const TYPING_IDLE_MS = 2500;   // stop "typing" after this long without a keystroke
  const TYPING_EXPIRE_MS = 8000; // forget someone's "typing" if their "false" never came
  const TYPING_REPEAT_MS = 5000; // say "typing" again this often while it goes on
  const PRESENCE_REPEAT_MS = 30000; // say "joined" again this often while the socket is open
  const PRESENCE_EXPIRE_MS = 75000; // drop from "Here now" whoever is not heard from this long
  const PRESENCE_ANSWER_GAP_MS = 3000; // answer a known person's "joined" if quiet this long

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- state

  let auth = loadAuth();   // {kind: "apikey"|"bearer", secret, userId}
  const feed = { page: 1, filter: "", sortBy: "updatedAt", direction: "desc", total: 0 };
  let conv = null;         // the open conversation's state (see openConversation)

  // ---------------------------------------------------------------- helpers

  function loadAuth() {
    try {
      const raw = sessionStorage.getItem(STORE_KEY);
      return raw ? JSON.parse(raw) : null;
    } catch (_) {
      return null;
    }
  }

  function saveAuth(value) {
    auth = value;
    if (value) sessionStorage.setItem(STORE_KEY, JSON.stringify(value));
    else sessionStorage.removeItem(STORE_KEY);
  }

  /** The `sub` of a JWT, read without verifying (for display and as our user id). */
  function jwtSubject(token) {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const json = decodeURIComponent(
        atob(part + "===".slice((part.length + 3) % 4))
          .split("")
          .map((c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0"))
          .join("")
      );
      const sub = JSON.parse(json).sub;
      return typeof sub === "string" ? sub : null;
    } catch (_) {
      return null;
    }
  }

  function authHeaders() {
    if (!auth) return {};
    return auth.kind === "apikey"
      ? { "X-API-KEY": auth.secret }
      : { Authorization: "Bearer " + auth.secret };
  }

  function isApiKey() {
    return auth && auth.kind === "apikey";
  }

  class ApiError extends Error {
    constructor(message, status, problem) {
      super(message);
      this.status = status;
      this.problem = problem;
    }
  }

  // Where the API is: the page's own directory, so that the console works behind a
  // proxy that serves this server under a path (https://example.com/airia/console).
  const ROOT = location.pathname.replace(/console\/?$/, "");

  /** fetch() against the API; JSON in and out; a problem becomes an ApiError. */
  async function api(method, path, options = {}) {
    const headers = Object.assign({ Accept: "application/json" }, authHeaders(), options.headers);
    let body;
    if (options.form) {
      body = options.form;
    } else if (options.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.json);
    }
    let response;
    try {
      response = await fetch(ROOT + path.replace(/^\//, ""), {
        method,
        headers,
        body,
        credentials: "omit",
      });
    } catch (err) {
      throw new ApiError("Cannot reach the server: " + err.message, 0, null);
    }
    const type = response.headers.get("content-type") || "";
    let data = null;
    if (response.status !== 204 && type.includes("json")) {
      try {
        data = await response.json();
      } catch (_) {
        data = null;
      }
    }
    if (!response.ok) {
      let message =
        data && typeof data.message === "string" && data.message
          ? data.message
          : response.status + " " + (response.statusText || "Error");
      const wait = response.status === 429 ? retryAfterSeconds(response.headers.get("Retry-After")) : null;
      if (wait !== null) message += "; try again in " + wait + " s";
      if (response.status === 401 && auth && !options.signingIn) credentialsFailed(message);
      throw new ApiError(message, response.status, data);
    }
    return data;
  }

  /** Retry-After (seconds, or an HTTP date) as whole seconds from now; null if absent. */
  function retryAfterSeconds(value) {
    if (!value) return null;
    if (/^\d+$/.test(value.trim())) return Number(value);
    const at = Date.parse(value);
    return isNaN(at) ? null : Math.max(1, Math.ceil((at - Date.now()) / 1000));
  }

  /** Credentials gone bad (a revoked key, an expired token): back to sign-in, saying why. */
  function credentialsFailed(message) {
    saveAuth(null);
    showError(message);
    route();
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
    }
    const s = q.toString();
    return s ? "?" + s : "";
  }

  const enc = encodeURIComponent;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** User-provided text set into a line of ours: isolated, so that a right-to-left
   * override in a user id (U+202E) cannot turn the rest of the line around. */
  function bidi(text) {
    return el("bdi", { text });
  }

  function showError(message) {
    $("error-text").textContent = message;
    $("error").hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error-text").textContent = "";
  }

  /** Run an action; show its failure as the problem's message. */
  async function attempt(action) {
    try {
      return await action();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401 && !auth) return undefined;
      // Once a conversation is gone, its late failures would only hide the reason.
      if (conv && conv.gone) return undefined;
      showError(err instanceof ApiError ? err.message : String(err && err.message ? err.message : err));
      return undefined;
    }
  }

  function formatTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    const now = new Date();
    const sameDay = d.toDateString() === now.toDateString();
    return sameDay
      ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
      : d.toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" });
  }

  function titleOf(c) {
    return c && c.title ? c.title : "Untitled conversation";
  }

  function show(viewId) {
    for (const id of ["view-signin", "view-feed", "view-conversation"]) {
      $(id).hidden = id !== viewId;
    }
  }

  /** The tab's title: what the view shows, then the console's name. */
  function setTitle(text) {
    document.title = text ? text + " · Airia Conversations" : "Airia Conversations";
  }

  // ---------------------------------------------------------------- routing

  function route() {
    const hash = location.hash || "#/";
    const match = /^#\/c\/([^/?#]+)/.exec(hash);
    if (!auth) {
      leaveConversation();
      renderWho();
      show("view-signin");
      setTitle("Sign in");
      updateSigninForm();
      $("signin-secret").focus();
      return;
    }
    renderWho();
    let id = null;
    if (match) {
      try {
        id = decodeURIComponent(match[1]);
      } catch (_) {
        id = null; // a hash no link of ours makes: back to the feed
      }
    }
    if (id !== null) {
      if (!conv || conv.id !== id) {
        leaveConversation();
        openConversation(id);
      }
      show("view-conversation");
    } else {
      leaveConversation();
      show("view-feed");
      setTitle("Conversations");
      loadFeed();
    }
  }

  function renderWho() {
    const who = $("whoami");
    if (auth) {
      who.replaceChildren("Signed in as ", bidi(auth.userId), isApiKey() ? " (API key)" : "");
      who.hidden = false;
      $("sign-out").hidden = false;
    } else {
      who.hidden = true;
      $("sign-out").hidden = true;
    }
  }

  // ---------------------------------------------------------------- sign in

  function signinKind() {
    return document.querySelector('input[name="kind"]:checked').value;
  }

  function updateSigninForm() {
    const apikey = signinKind() === "apikey";
    $("signin-secret-label").textContent = apikey ? "API key" : "Bearer token";
    $("signin-user-row").hidden = !apikey;
    $("signin-user").required = apikey;
  }

  async function signIn(event) {
    event.preventDefault();
    clearError();
    const kind = signinKind();
    const secret = $("signin-secret").value.trim();
    let userId = $("signin-user").value.trim();
    if (!secret) {
      showError(kind === "apikey" ? "Enter an API key" : "Enter a bearer token");
      return;
    }
    if (kind === "bearer") {
      userId = jwtSubject(secret);
      if (!userId) {
        showError("That is not a bearer token (a JWT with a 'sub' claim)");
        return;
      }
    } else if (!userId) {
      showError("Enter the user id to act as");
      return;
    }
    const candidate = { kind, secret, userId };
    const previous = auth;
    auth = candidate;
    $("signin-submit").disabled = true;
    try {
      // Any authenticated call checks the credentials; the feed is the cheapest.
      await api("GET", "/v1/Conversations/feed" + query({ PageSize: 1, userId: kind === "apikey" ? userId : "" }), {
        signingIn: true,
      });
      saveAuth(candidate);
      $("signin-secret").value = "";
      feed.page = 1;
      route();
    } catch (err) {
      auth = previous;
      showError(err.message);
    } finally {
      $("signin-submit").disabled = false;
    }
  }

  function signOut() {
    leaveConversation();
    saveAuth(null);
    clearError();
    location.hash = "#/";
    route();
  }

  // ---------------------------------------------------------------- feed

  let feedSeq = 0;

  function feedPage() {
    return api(
      "GET",
      "/v1/Conversations/feed" +
        query({
          PageNumber: feed.page,
          PageSize: feedPageSize,
          SortBy: feed.sortBy,
          SortDirection: feed.direction,
          filter: feed.filter,
          userId: isApiKey() ? auth.userId : "",
        })
    );
  }

  async function loadFeed() {
    const seq = ++feedSeq;
    const data = await attempt(async () => {
      try {
        return await feedPage();
      } catch (err) {
        // A server whose largest page is smaller says so ("from 1 to 10"): use that.
        const bound = err instanceof ApiError && err.status === 422
          ? /PageSize.*from 1 to (\d+)/.exec(err.message)
          : null;
        if (!bound) throw err;
        feedPageSize = Number(bound[1]);
        return feedPage();
      }
    });
    if (!data || seq !== feedSeq) return;
    feed.total = data.totalCount;
    const pages = Math.max(1, Math.ceil(data.totalCount / feedPageSize));
    if (feed.page > pages && data.totalCount > 0) {
      feed.page = pages;
      loadFeed();
      return;
    }
    const list = $("feed-list");
    list.replaceChildren(...data.items.map(feedItem));
    $("feed-empty").hidden = data.items.length > 0;
    $("feed-empty").replaceChildren(
      ...(feed.filter ? ["No conversation matches “", bidi(feed.filter), "”."] : ["No conversations yet."])
    );
    $("feed-page").textContent = "Page " + feed.page + " of " + pages + " · " + data.totalCount + " total";
    $("feed-prev").disabled = feed.page <= 1;
    $("feed-next").disabled = feed.page >= pages;
  }

  function feedItem(item) {
    const star = el("button", {
      type: "button",
      class: "star",
      "aria-pressed": item.isBookmarked ? "true" : "false",
      "aria-label": (item.isBookmarked ? "Remove bookmark from " : "Bookmark ") + titleOf(item),
      text: item.isBookmarked ? "★" : "☆",
      onclick: () => attempt(async () => {
        const updated = await setBookmark(item.conversationId, !item.isBookmarked);
        item.isBookmarked = updated.isBookmarked;
        star.textContent = item.isBookmarked ? "★" : "☆";
        star.setAttribute("aria-pressed", item.isBookmarked ? "true" : "false");
        star.setAttribute("aria-label", (item.isBookmarked ? "Remove bookmark from " : "Bookmark ") + titleOf(item));
      }),
    });
    const unread = item.unreadCount > 0
      ? el("span", { class: "badge", "aria-label": item.unreadCount + " unread", text: String(item.unreadCount) })
      : null;
    return el(
      "li",
      { class: "feed-item", "data-id": item.conversationId },
      star,
      el(
        "a",
        { class: "feed-link", href: "#/c/" + enc(item.conversationId) },
        el("span", { class: "feed-title", text: titleOf(item) }),
        el(
          "span",
          { class: "feed-meta" },
          bidi(item.userId),
          " · " + item.messageCount + (item.messageCount === 1 ? " message" : " messages") +
            " · " + formatTime(item.updatedAt)
        )
      ),
      unread
    );
  }

  async function setBookmark(id, value) {
    // PUT needs the title: the one the conversation has now, not the one this page
    // loaded (someone may have renamed it since). Untitled, it gets the name shown.
    const current = await api("GET", "/v1/Conversations/" + enc(id));
    return api("PUT", "/v1/Conversations/" + enc(id), {
      json: { title: current.title || "Untitled conversation", isBookmarked: value },
    });
  }

  let searchTimer = null;

  function onSearch() {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      feed.filter = $("feed-search").value.trim();
      feed.page = 1;
      loadFeed();
    }, 250);
  }

  function onSort() {
    const [by, dir] = $("feed-sort").value.split(":");
    feed.sortBy = by;
    feed.direction = dir;
    feed.page = 1;
    loadFeed();
  }

  async function createConversation(event) {
    event.preventDefault();
    clearError();
    const title = $("new-title").value.trim();
    const created = await attempt(() =>
      api("POST", "/v1/Conversations", { json: { userId: auth.userId, title: title || null } })
    );
    if (!created) return;
    $("new-form").hidden = true;
    $("new-title").value = "";
    location.hash = "#/c/" + enc(created.conversationId);
  }

  // ---------------------------------------------------------------- conversation

  function convPath(suffix) {
    return "/v1/Conversations/" + enc(conv.id) + (suffix || "");
  }

  async function openConversation(id) {
    clearError();
    conv = {
      id,
      record: null,
      messages: new Map(),  // id -> message
      nextCursor: null,
      olderLoaded: false,
      lastSequence: null,   // the last stored event's sequence seen on the socket
      ws: null,
      closed: false,        // left, or stopped for good
      gone: false,          // missing, deleted, or no longer ours: nothing to act on
      retry: 0,
      retryTimer: null,
      typingPeople: new Map(), // userId -> expiry timer
      here: new Map(),      // userId -> timer that drops them (none for ourselves)
      announcedAt: 0,       // when we last said "joined"
      presenceTimer: null,
      typingSent: false,
      unsent: null,         // {text, key}: the Idempotency-Key of text not yet sent
      sending: null,        // the text on its way
      typingTimer: null,
      readTimer: null,
      role: null,
    };
    const mine = conv;
    $("conv-title").textContent = "…";
    setTitle("");
    $("message-list").replaceChildren();
    $("participant-list").replaceChildren();
    $("attachment-list").replaceChildren();
    $("here-list").replaceChildren();
    $("typing").textContent = "";
    $("conv-status").textContent = "";
    $("rename-form").hidden = true;
    $("upload-status").textContent = "";
    renderControls(); // none until the caller's role is known

    let failure = null;
    const record = await attempt(() =>
      api("GET", convPath()).catch((err) => {
        failure = err;
        throw err;
      })
    );
    if (mine !== conv) return;
    if (!record && failure && failure.status === 429) {
      // Not gone, only not now: the banner says how long to wait.
      $("conv-title").textContent = "Rate limited";
      setTitle("Rate limited");
      return;
    }
    if (!record) {
      conv.gone = true;
      renderControls();
      $("conv-title").textContent = "Conversation unavailable";
      setTitle("Conversation unavailable");
      return;
    }
    renderRecord(record);
    // The socket first, then the newest page: a message in between comes twice and
    // is kept once (by id), rather than not at all.
    connect();
    await Promise.all([loadNewest(), loadParticipants(), loadAttachments()]);
    if (mine !== conv) return;
    focusComposer();
    markRead();
  }

  /** Where a keyboard user wants to be on opening a conversation: in the message box,
   * unless they have gone somewhere since (or the on-screen keyboard would cover it). */
  function focusComposer() {
    const where = document.activeElement;
    const elsewhere = where && where !== document.body && where.offsetParent !== null;
    if (!canWrite() || elsewhere || matchMedia("(pointer: coarse)").matches) return;
    $("composer-text").focus();
  }

  function leaveConversation() {
    if (!conv) return;
    const old = conv;
    conv = null;
    old.closed = true;
    clearTimeout(old.retryTimer);
    clearTimeout(old.typingTimer);
    clearTimeout(old.readTimer);
    clearTimeout(old.presenceTimer);
    for (const timer of old.typingPeople.values()) clearTimeout(timer);
    for (const timer of old.here.values()) clearTimeout(timer);
    if (old.ws) {
      if (old.ws.readyState === WebSocket.OPEN) {
        if (old.typingSent) sendFrame(old, { type: "typing", isTyping: false });
        sendFrame(old, { type: "presence", action: "left" });
      }
      try {
        old.ws.close(1000, "left");
      } catch (_) { /* already closed */ }
    }
  }

  function renderRecord(record) {
    conv.record = record;
    $("conv-title").textContent = titleOf(record);
    // FIRST STRONG ISOLATE … POP DIRECTIONAL ISOLATE: the tab's title has no elements.
    setTitle("\u2068" + titleOf(record) + "\u2069");
    const star = $("conv-bookmark");
    star.textContent = record.isBookmarked ? "★" : "☆";
    star.setAttribute("aria-pressed", record.isBookmarked ? "true" : "false");
    star.setAttribute("aria-label", record.isBookmarked ? "Remove bookmark" : "Bookmark");
  }

  async function loadNewest() {
    const mine = conv;
    const page = await attempt(() =>
      api("GET", convPath("/messages" + query({ order: "desc", limit: MESSAGE_PAGE })))
    );
    if (!page || mine !== conv) return;
    for (const m of page.items) conv.messages.set(m.id, m);
    if (!conv.olderLoaded) conv.nextCursor = page.nextCursor; // else keep the reader's place
    renderMessages(true);
  }

  async function loadOlder() {
    if (!conv || !conv.nextCursor) return;
    const mine = conv;
    const box = $("messages");
    const fromBottom = box.scrollHeight - box.scrollTop;
    const page = await attempt(() =>
      api("GET", convPath("/messages" + query({ order: "desc", limit: MESSAGE_PAGE, cursor: conv.nextCursor })))
    );
    if (!page || mine !== conv) return;
    for (const m of page.items) conv.messages.set(m.id, m);
    conv.nextCursor = page.nextCursor;
    conv.olderLoaded = true;
    renderMessages(false);
    box.scrollTop = box.scrollHeight - fromBottom; // keep the reader where they were
  }

  function sortedMessages() {
    return [...conv.messages.values()].sort((a, b) =>
      a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0
    );
  }

  function renderMessages(stickToBottom) {
    const box = $("messages");
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    $("message-list").replaceChildren(...sortedMessages().map(messageItem));
    rovingTruncate(null);
    $("load-older").hidden = !conv.nextCursor;
    if (stickToBottom || atBottom) box.scrollTop = box.scrollHeight;
  }

  function messageItem(m) {
    const mine = m.userId && m.userId === auth.userId && m.role === "user";
    const who = m.role === "user" ? (m.userId || "user") : m.role;
    const body = el("div", { class: "message-body" });
    body.textContent = m.message || "";
    const images = (m.images || []).filter((u) => /^https?:\/\//i.test(u));
    return el(
      "li",
      { class: "message" + (mine ? " mine" : "") + " role-" + m.role, "data-id": m.id },
      el(
        "div",
        { class: "message-head" },
        el("span", { class: "message-author", text: who }),
        el("time", { datetime: m.createdAt, text: formatTime(m.createdAt) }),
        el("button", {
          type: "button",
          class: "link truncate",
          text: "Delete from here",
          "aria-label": "Delete this message and every later one",
          "aria-keyshortcuts": "ArrowUp ArrowDown Home End",
          hidden: !canManage(),
          onclick: () => truncateFrom(m),
        })
      ),
      body,
      images.length
        ? el("div", { class: "message-images" }, ...images.map((u) => el("a", { href: u, target: "_blank", rel: "noopener noreferrer", text: "image" })))
        : null,
      (m.imageAttachmentIds || []).length
        ? el("div", { class: "hint", text: m.imageAttachmentIds.length + " attached image(s)" })
        : null
    );
  }

  /** "Delete from here" is one Tab stop for the whole list (the newest message's, or
   * the one last moved to); the arrow keys move it from message to message. */
  function rovingTruncate(stop) {
    const buttons = [...document.querySelectorAll("#message-list .truncate")];
    if (!buttons.includes(stop)) stop = buttons[buttons.length - 1];
    for (const b of buttons) b.tabIndex = b === stop ? 0 : -1;
    return buttons;
  }

  function onTruncateKey(event) {
    const from = event.target;
    if (!(from instanceof HTMLElement) || !from.classList.contains("truncate")) return;
    const buttons = rovingTruncate(from);
    const moves = { ArrowUp: -1, ArrowDown: 1, Home: -buttons.length, End: buttons.length };
    if (!(event.key in moves)) return;
    event.preventDefault();
    const at = Math.max(0, Math.min(buttons.length - 1, buttons.indexOf(from) + moves[event.key]));
    rovingTruncate(buttons[at]);
    buttons[at].focus();
  }

  async function truncateFrom(m) {
    const later = sortedMessages().filter((x) => x.createdAt >= m.createdAt).length;
    const ok = window.confirm(
      "Delete this message and every message after it" + (later > 1 ? " (" + later + " loaded)" : "") + "? This cannot be undone."
    );
    if (!ok) return;
    const mine = conv;
    const result = await attempt(() =>
      api("DELETE", convPath("/messages/" + enc(m.id) + "/truncate"))
    );
    if (!result || mine !== conv) return;
    await reloadMessages();
  }

  async function reloadMessages() {
    conv.messages.clear();
    conv.nextCursor = null;
    conv.olderLoaded = false;
    await loadNewest();
  }

  async function sendMessage(event) {
    if (event) event.preventDefault();
    const box = $("composer-text");
    const text = box.value;
    // Enter pressed again while this very text is on its way: one message. (Another
    // text, typed meanwhile, goes at once.)
    if (!text.trim() || !canWrite() || conv.sending === text) return;
    const mine = conv;
    const body = { message: text, role: "user" };
    if (isApiKey()) body.userId = auth.userId;
    // One key per message typed, kept until it is sent: Enter again after a failure
    // (the answer lost, say) sends the same key, and is answered, never stored twice.
    // Changed text is another message, with a key of its own.
    if (!mine.unsent || mine.unsent.text !== text) mine.unsent = { text, key: crypto.randomUUID() };
    const key = mine.unsent.key;
    mine.sending = text;
    $("composer-send").disabled = true;
    try {
      const created = await attempt(() =>
        api("POST", convPath("/messages"), { json: body, headers: { "Idempotency-Key": key } })
      );
      if (!created || mine !== conv) return;
      if (mine.unsent && mine.unsent.key === key) mine.unsent = null;
      // Take out what was sent, and only that: what was typed while it went stays.
      if (box.value.startsWith(text)) box.value = box.value.slice(text.length);
      stopTyping();
      // The socket delivers it too; show it now in case the socket is reconnecting.
      if (!conv.messages.has(created.messageId)) {
        conv.messages.set(created.messageId, {
          id: created.messageId,
          conversationId: conv.id,
          message: text,
          role: "user",
          images: null,
          imageAttachmentIds: null,
          createdAt: created.createdAt,
          updatedAt: created.createdAt,
          userId: auth.userId,
        });
        renderMessages(true);
      }
      scheduleRead();
    } finally {
      if (mine.sending === text) mine.sending = null;
      $("composer-send").disabled = false;
      box.focus();
    }
  }

  function scheduleRead() {
    if (!conv) return;
    clearTimeout(conv.readTimer);
    conv.readTimer = setTimeout(markRead, 500);
  }

  async function markRead() {
    if (!conv || document.hidden) return;
    const mine = conv;
    try {
      await api("PATCH", convPath("/mark-as-read" + query({ userId: isApiKey() ? auth.userId : "" })));
    } catch (err) {
      // Reading is the point of the page; a failed read marker is only worth a line.
      if (mine === conv) $("conv-status").textContent = "Could not mark as read: " + err.message;
    }
  }

  async function rename(event) {
    event.preventDefault();
    const title = $("rename-title").value.trim();
    if (!title) {
      showError("A title cannot be empty");
      return;
    }
    const updated = await attempt(() =>
      api("PUT", convPath(), { json: { title, isBookmarked: conv.record.isBookmarked } })
    );
    if (!updated || !conv) return;
    $("rename-form").hidden = true;
    renderRecord(updated);
  }

  async function toggleBookmark() {
    if (!conv || !conv.record) return;
    const updated = await attempt(() => setBookmark(conv.id, !conv.record.isBookmarked));
    if (updated && conv) renderRecord(updated);
  }

  async function loadParticipants() {
    const mine = conv;
    const people = await attempt(() => api("GET", convPath("/participants")));
    if (!people || mine !== conv) return;
    const me = people.find((p) => p.userId === auth.userId);
    conv.role = isApiKey() ? (me ? me.role : "Owner") : me ? me.role : null;
    $("participant-list").replaceChildren(
      ...people.map((p) =>
        el(
          "li",
          { class: "participant", "data-user": p.userId },
          el("span", { class: "participant-name" }, bidi(p.userId), p.userId === auth.userId ? " (you)" : null),
          el("span", { class: "role role-" + p.role.toLowerCase(), text: p.role })
        )
      )
    );
    renderControls();
  }

  /** Whether the caller may edit, share, truncate: an Owner, or an API key. */
  function canManage() {
    return canWrite() && (isApiKey() || conv.role === "Owner");
  }

  /** Whether the caller may write and upload: a role above Viewer, on a conversation
   * that is still there. */
  function canWrite() {
    return conv !== null && !conv.gone && conv.role !== null && conv.role !== "Viewer";
  }

  /** Show the tools the caller may use here, and only those. */
  function renderControls() {
    const manage = canManage();
    $("share-form").hidden = !manage;
    $("conv-rename").hidden = !manage;
    $("conv-bookmark").hidden = !manage; // a bookmark is an edit: Owners only
    if (!manage) $("rename-form").hidden = true;
    document.querySelectorAll(".truncate").forEach((b) => {
      b.hidden = !manage;
    });
    $("composer").hidden = !canWrite();
    $("upload-button").hidden = !canWrite();
  }

  async function share(event) {
    event.preventDefault();
    const userId = $("share-user").value.trim();
    if (!userId) {
      showError("Enter the user id to share with");
      return;
    }
    const role = $("share-role").value;
    const done = await attempt(() => api("POST", convPath("/share"), { json: { userId, role } }));
    if (!done) return;
    $("share-user").value = "";
    await loadParticipants();
  }

  async function loadAttachments() {
    const mine = conv;
    const files = await attempt(() => api("GET", convPath("/attachments")));
    if (!files || mine !== conv) return;
    renderAttachments(files);
  }

  function renderAttachments(files) {
    const list = $("attachment-list");
    if (!files.length) {
      list.replaceChildren(el("li", { class: "hint", text: "No attachments." }));
      return;
    }
    list.replaceChildren(
      ...files.map((f) =>
        el(
          "li",
          { class: "attachment" },
          /^https?:\/\//i.test(f.url)
            ? el("a", { href: f.url, download: f.fileName, rel: "noopener noreferrer" }, bidi(f.fileName))
            : bidi(f.fileName),
          el("span", { class: "hint", text: " " + formatSize(f.size) })
        )
      )
    );
  }

  function formatSize(n) {
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KB";
    return (n / 1024 / 1024).toFixed(1) + " MB";
  }

  async function upload() {
    const input = $("upload-input");
    const file = input.files && input.files[0];
    if (!file || !canWrite()) return;
    const form = new FormData();
    form.append("source", "user");
    form.append("file", file, file.name);
    $("upload-status").replaceChildren("Uploading ", bidi(file.name), "…");
    const done = await attempt(() => api("POST", convPath("/agent-attachments"), { form }));
    input.value = "";
    $("upload-status").replaceChildren(...(done ? ["Uploaded ", bidi(done.fileName), "."] : []));
    if (done) await loadAttachments();
  }

  // ---------------------------------------------------------------- real time

  function sendFrame(c, frame) {
    if (!c.ws || c.ws.readyState !== WebSocket.OPEN) return;
    if (isApiKey()) frame.userId = auth.userId; // an API key's socket acts for no one
    c.ws.send(JSON.stringify(frame));
  }

  function canSignal() {
    return conv && conv.role !== "Viewer";
  }

  async function connect() {
    const mine = conv;
    if (!mine || mine.closed) return;
    let url;
    try {
      url = (await api("GET", convPath("/websocket-url"))).websocketUrl;
    } catch (err) {
      if (mine !== conv) return;
      if (err.status === 404 || err.status === 403) {
        markGone(err.message);
      } else {
        retryLater();
      }
      return;
    }
    if (mine !== conv) return;
    if (mine.lastSequence !== null) url += "&after=" + mine.lastSequence;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      stopLive("Cannot open the live connection: " + err.message);
      return;
    }
    mine.ws = ws;
    ws.onopen = () => {
      if (mine !== conv) return;
      const resumed = mine.retry > 0;
      // The back-off starts over once the socket has carried something (onmessage):
      // a server that accepts and then closes at once must not be retried in a loop.
      $("conv-status").textContent = "";
      announce(mine);
      mine.here.set(auth.userId, null);
      renderHere();
      // Without a known sequence, a resumed socket cannot replay: reread instead.
      if (resumed && mine.lastSequence === null) loadNewest();
    };
    ws.onmessage = (event) => {
      if (mine !== conv) return;
      mine.retry = 0;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      onEvent(frame);
    };
    ws.onclose = (event) => {
      if (mine !== conv || mine.closed) return;
      mine.ws = null;
      clearTimeout(mine.presenceTimer);
      // "Here now" is kept while the socket comes back: its people still expire.
      if (event.code === 1000) {
        markGone("This conversation was deleted.");
      } else if (event.code === 1008) {
        policyClosed(mine, event.reason);
      } else {
        // 4000 says where to resume ("resume after=N"): after a fall-behind, what
        // was sent; after a database restored from a backup, where its log ends.
        const resume = /^resume after=(\d+)$/.exec(event.reason || "");
        if (event.code === 4000 && resume) mine.lastSequence = Number(resume[1]);
        retryLater();
      }
    };
  }

  /** A 1008 is this user's access removed, or the credentials gone bad (the API key
   * revoked): the reason says which, and where it does not, a 401 from the server does. */
  async function policyClosed(mine, reason) {
    if (reason === "API key revoked") {
      credentialsFailed(reason);
      return;
    }
    try {
      await api("GET", convPath()); // a 401 returns to sign-in (see api)
    } catch (err) {
      if (mine !== conv) return;
      if (err.status === 403 || err.status === 404) {
        markGone("You no longer have access to this conversation.");
        return;
      }
    }
    if (mine === conv) retryLater(); // still ours after all: connect again
  }

  function retryLater() {
    const mine = conv;
    if (!mine || mine.closed) return;
    const delay = Math.min(30000, 500 * 2 ** Math.min(mine.retry, 6));
    mine.retry += 1;
    $("conv-status").textContent = "Reconnecting…";
    mine.retryTimer = setTimeout(() => {
      if (mine === conv) connect();
    }, delay);
  }

  function stopLive(message) {
    if (!conv) return;
    conv.closed = true;
    $("conv-status").textContent = message;
    showError(message);
  }

  /** The conversation is gone, or no longer ours: say why, and offer nothing to do. */
  function markGone(message) {
    if (!conv) return;
    conv.gone = true;
    stopLive(message);
    for (const timer of conv.typingPeople.values()) clearTimeout(timer);
    conv.typingPeople.clear();
    renderTyping();
    clearTimeout(conv.presenceTimer);
    for (const timer of conv.here.values()) clearTimeout(timer);
    conv.here.clear();
    renderHere();
    renderControls();
  }

  function onEvent(frame) {
    if (typeof frame.sequence === "number") conv.lastSequence = frame.sequence;
    const data = frame.data || {};
    switch (frame.type) {
      case "message.created":
        if (!conv.messages.has(data.id)) {
          conv.messages.set(data.id, data);
          renderMessages(false);
        } else {
          conv.messages.set(data.id, data);
        }
        if (data.userId) clearTyping(data.userId);
        scheduleRead();
        break;
      case "messages.truncated":
        reloadMessages();
        break;
      case "conversation.updated":
        if (conv.record) renderRecord(Object.assign({}, conv.record, data));
        break;
      case "conversation.deleted":
        break; // the close (1000) that follows says so
      case "participant.added":
      case "participant.updated":
      case "participant.removed":
        loadParticipants();
        break;
      case "typing":
        onTyping(data.userId, data.isTyping);
        break;
      case "presence":
        onPresence(data.userId, data.action);
        break;
      case "error":
        $("conv-status").textContent = frame.message || "The server refused a frame";
        break;
      default:
        break;
    }
  }

  function onTyping(userId, isTyping) {
    if (!userId || userId === auth.userId) return;
    if (conv.here.has(userId)) seen(userId);
    if (isTyping) {
      clearTimeout(conv.typingPeople.get(userId));
      conv.typingPeople.set(userId, setTimeout(() => clearTyping(userId), TYPING_EXPIRE_MS));
    } else {
      clearTyping(userId);
      return;
    }
    renderTyping();
  }

  function clearTyping(userId) {
    if (!conv || !conv.typingPeople.has(userId)) return;
    clearTimeout(conv.typingPeople.get(userId));
    conv.typingPeople.delete(userId);
    renderTyping();
  }

  function renderTyping() {
    const names = [...conv.typingPeople.keys()];
    let parts = [];
    if (names.length === 1) parts = [bidi(names[0]), " is typing…"];
    else if (names.length === 2) parts = [bidi(names[0]), " and ", bidi(names[1]), " are typing…"];
    else if (names.length > 2) parts = [names.length + " people are typing…"];
    $("typing").replaceChildren(...parts);
  }

  /** Say "joined", and again every PRESENCE_REPEAT_MS while the socket stays open, so
   * that others keep us in "Here now" (they drop whoever falls silent). */
  function announce(c) {
    clearTimeout(c.presenceTimer);
    if (c !== conv || !c.ws || c.ws.readyState !== WebSocket.OPEN || !canSignal()) return;
    sendFrame(c, { type: "presence", action: "joined" });
    c.announcedAt = Date.now();
    c.presenceTimer = setTimeout(() => announce(c), PRESENCE_REPEAT_MS);
  }

  /** A sign of life from someone here ("joined", typing): keep them PRESENCE_EXPIRE_MS more. */
  function seen(userId) {
    const mine = conv;
    clearTimeout(mine.here.get(userId));
    mine.here.set(userId, setTimeout(() => {
      if (mine !== conv) return;
      mine.here.delete(userId);
      renderHere();
    }, PRESENCE_EXPIRE_MS));
  }

  function onPresence(userId, action) {
    if (!userId || userId === auth.userId) return; // never answer ourselves
    if (action === "joined") {
      const known = conv.here.has(userId);
      seen(userId);
      // Presence is not stored: a "joined" is answered with ours, so the newcomer, or
      // someone whose socket came back (already listed here), learns we are here. A
      // newcomer is answered once; a known person only if we have been quiet a while,
      // so an answer to our own answer goes unanswered and the exchange stops.
      if (!known || Date.now() - conv.announcedAt >= PRESENCE_ANSWER_GAP_MS) announce(conv);
    } else if (action === "left") {
      clearTimeout(conv.here.get(userId));
      conv.here.delete(userId);
      clearTyping(userId);
    }
    renderHere();
  }

  function renderHere() {
    if (!conv) return;
    const people = [...conv.here.keys()].sort((a, b) => (a === auth.userId ? -1 : b === auth.userId ? 1 : a < b ? -1 : 1));
    $("here-list").replaceChildren(
      ...people.map((u) => el("li", { class: "chip", "data-user": u }, bidi(u), u === auth.userId ? " (you)" : null))
    );
  }

  function onComposerInput() {
    if (!conv || !canSignal()) return;
    if (!$("composer-text").value) {
      stopTyping();
      return;
    }
    // Said again every few seconds while the typing goes on: others forget a "typing"
    // after TYPING_EXPIRE_MS, in case its "false" never comes.
    const now = Date.now();
    if (!conv.typingSent || now - conv.typingSentAt > TYPING_REPEAT_MS) {
      conv.typingSent = true;
      conv.typingSentAt = now;
      sendFrame(conv, { type: "typing", isTyping: true });
    }
    clearTimeout(conv.typingTimer);
    conv.typingTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
  }

  function stopTyping() {
    if (!conv) return;
    clearTimeout(conv.typingTimer);
    if (conv.typingSent) {
      conv.typingSent = false;
      sendFrame(conv, { type: "typing", isTyping: false });
    }
  }

  // ---------------------------------------------------------------- wiring

  function wire() {
    for (const radio of document.querySelectorAll('input[name="kind"]')) {
      radio.addEventListener("change", updateSigninForm);
    }
    $("signin-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", signOut);
    $("error-close").addEventListener("click", clearError);

    $("feed-search").addEventListener("input", onSearch);
    $("feed-sort").addEventListener("change", onSort);
    $("feed-prev").addEventListener("click", () => { feed.page -= 1; loadFeed(); });
    $("feed-next").addEventListener("click", () => { feed.page += 1; loadFeed(); });
    $("new-conversation").addEventListener("click", () => {
      $("new-form").hidden = false;
      $("new-title").focus();
    });
    $("new-cancel").addEventListener("click", () => { $("new-form").hidden = true; });
    $("new-form").addEventListener("submit", createConversation);

    $("conv-bookmark").addEventListener("click", toggleBookmark);
    $("conv-rename").addEventListener("click", () => {
      $("rename-title").value = conv && conv.record ? conv.record.title || "" : "";
      $("rename-form").hidden = false;
      $("rename-title").focus();
    });
    $("rename-cancel").addEventListener("click", () => { $("rename-form").hidden = true; });
    $("rename-form").addEventListener("submit", rename);
    $("load-older").addEventListener("click", loadOlder);
    $("message-list").addEventListener("keydown", onTruncateKey);
    $("composer").addEventListener("submit", sendMessage);
    $("composer-text").addEventListener("input", onComposerInput);
    $("composer-text").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) sendMessage(e);
    });
    $("share-form").addEventListener("submit", share);
    $("upload-button").addEventListener("click", () => $("upload-input").click());
    $("upload-input").addEventListener("change", upload);

    window.addEventListener("hashchange", () => { clearError(); route(); });
    window.addEventListener("pagehide", leaveConversation);
    window.addEventListener("pageshow", (e) => { if (e.persisted) route(); });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && conv) markRead();
    });
  }

  wire();
  route();
})();
