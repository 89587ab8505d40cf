// Keyboard answers and a send queue that survives network failures and reloads: every answer
// gets an idempotency key when it is given, waits in localStorage until the server has
// acknowledged it, and is retried until then (the server stores a key's answer once). A stale
// session (a new login in another tab, or an expired one) keeps the answers queued too: the
// page fetches its session's current CSRF token and sends them again. Each answer is kept
// with the account that gave it and sent only under that account's session: when someone else
// logs in on the same browser, the answers wait for their own labeler to log in again.
"use strict";

const QUEUE = "rlxf-unsent-answers";
const CSRF_REFUSED = "missing or wrong CSRF token"; // the server's 403 detail for a stale token
let csrf = document.body.dataset.csrf; // replaced when the session's token has changed
let loggedOut = false; // the session has ended: the labeler must log in again (in another tab)
const pageUser = document.body.dataset.user; // the account this page was shown to
let sessionUser = pageUser; // the account the browser's session now belongs to

function unsent() {
  try { return JSON.parse(localStorage.getItem(QUEUE) || "[]"); } catch { return []; }
}

function saveUnsent(list) {
  localStorage.setItem(QUEUE, JSON.stringify(list));
  showUnsent(list);
}

// Answers this session may send: the ones its own account gave.
function sendable(list) {
  return list.filter((e) => e.user === sessionUser);
}

function showUnsent(list) {
  const banner = document.getElementById("unsent");
  const others = list.length - sendable(list).length;
  banner.hidden = list.length === 0;
  banner.textContent = loggedOut
    ? `${list.length} answer(s) not yet sent: you are logged out. Log in again in another tab; they are sent once you have.`
    : others > 0
      ? `${others} answer(s) of another account wait on this browser until that account logs in again.`
      : `${list.length} answer(s) not yet sent: retrying…`;
}

// Asks the server for the session's current token and account; true when a usable new token came back.
async function refreshCsrf() {
  let response;
  try {
    response = await fetch("/api/session", { headers: { Accept: "application/json" }, cache: "no-store" });
  } catch {
    return false; // offline: the caller tries again later
  }
  loggedOut = response.status === 401;
  const body = response.ok ? await response.json().catch(() => ({})) : {};
  const fresh = body.csrf;
  if (body.user !== undefined) sessionUser = String(body.user);
  saveUnsent(unsent()); // shows or clears the logged-out banner
  if (typeof fresh !== "string" || fresh === csrf) return false;
  csrf = fresh;
  return true;
}

let flushing = false;

// The queue is shared by the app's tabs: another tab may have sent this page's answer.
function ownAnswerSent() {
  return sentKey !== null && !unsent().some((e) => e.body.idempotency_key === sentKey);
}

async function flush() {
  if (ownAnswerSent()) { location.reload(); return; }
  if (flushing) return;
  flushing = true;
  try {
    if (sessionUser !== pageUser && sendable(unsent()).length === 0) {
      setTimeout(async () => { await refreshCsrf(); flush(); }, 5000); // wait for the account to return
      return;
    }
    for (const entry of sendable(unsent())) {
      let response;
      try {
        response = await fetch(`/api/projects/${entry.project}/answers`, {
          method: "POST",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
          body: JSON.stringify(entry.body),
        });
      } catch {
        setTimeout(flush, 2000); // offline: keep it and try again
        return;
      }
      if (response.status >= 500 || response.status === 429) {
        setTimeout(flush, 2000);
        return;
      }
      if (response.status === 401 || response.status === 403) {
        const detail = await response.clone().json().catch(() => ({}));
        if (response.status === 401 || detail.detail === CSRF_REFUSED) {
          // not the answer's fault: keep it, get the session's token, and send it again
          const refreshed = await refreshCsrf();
          setTimeout(flush, refreshed ? 0 : 5000);
          return;
        }
      }
      const remaining = unsent().filter((e) => e.body.idempotency_key !== entry.body.idempotency_key);
      saveUnsent(remaining); // stored (2xx) or refused for good (other 4xx): either way it leaves the queue
      if (!response.ok) {
        const detail = await response.json().catch(() => ({}));
        showStatus(`Not saved: ${detail.detail || response.status}`);
        return;
      }
      if (entry.next) location.reload();
    }
  } finally {
    flushing = false;
  }
}

function showStatus(text) {
  const status = document.getElementById("status");
  if (status) status.textContent = text;
}

let sent = false;
let sentKey = null; // the idempotency key of the answer given on this page

function send(answer) {
  const task = document.getElementById("task");
  if (!task || sent) return;
  sent = true;
  const key = (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`).replace(/[^A-Za-z0-9_-]/g, "");
  const entry = {
    project: task.dataset.project,
    user: pageUser,
    next: true,
    body: { item_id: Number(task.dataset.item), answer, idempotency_key: key.slice(0, 64) },
  };
  sentKey = entry.body.idempotency_key;
  saveUnsent([...unsent(), entry]);
  showStatus("Sending…");
  flush();
}

function typing(event) {
  const tag = event.target.tagName;
  return tag === "TEXTAREA" || tag === "INPUT" || tag === "SELECT";
}

const questions = {
  pairwise(task) {
    const keys = { 1: "A", a: "A", 2: "B", b: "B", 3: "tie", t: "tie", 4: "both_bad", x: "both_bad" };
    const answer = (choice) => send({ choice, reason: document.getElementById("reason").value });
    task.querySelectorAll("[data-answer]").forEach((b) => b.addEventListener("click", () => answer(JSON.parse(b.dataset.answer).choice)));
    return (event) => { if (!typing(event) && keys[event.key]) answer(keys[event.key]); };
  },
  reaction(task) {
    const keys = { 1: "love", 2: "like", 3: "dislike" };
    task.querySelectorAll("[data-answer]").forEach((b) => b.addEventListener("click", () => send(JSON.parse(b.dataset.answer))));
    return (event) => { if (!typing(event) && keys[event.key]) send({ reaction: keys[event.key] }); };
  },
  rating(task) {
    const rows = [...task.querySelectorAll(".aspect")];
    const scores = {};
    let current = 0;
    const mark = () => rows.forEach((row, i) => row.classList.toggle("current", i === current));
    const score = (row, value) => {
      scores[row.dataset.aspect] = value;
      row.querySelectorAll("button").forEach((b) => b.classList.toggle("chosen", Number(b.dataset.score) === value));
    };
    const submit = () => {
      if (Object.keys(scores).length < rows.length) { showStatus("Score every aspect first."); return; }
      send({ scores });
    };
    rows.forEach((row, i) => row.querySelectorAll("button").forEach((b) =>
      b.addEventListener("click", () => { score(row, Number(b.dataset.score)); current = i; mark(); })));
    document.getElementById("send").addEventListener("click", submit);
    return (event) => {
      if (typing(event)) return;
      if (/^[1-5]$/.test(event.key)) {
        score(rows[current], Number(event.key));
        current = Math.min(current + 1, rows.length - 1);
        mark();
      } else if (event.key === "ArrowUp") { current = Math.max(current - 1, 0); mark(); }
      else if (event.key === "ArrowDown") { current = Math.min(current + 1, rows.length - 1); mark(); }
      else if (event.key === "Enter") submit();
    };
  },
  ranking(task) {
    const count = Number(task.dataset.count);
    const order = [];
    const output = document.getElementById("order");
    const show = () => { output.textContent = order.map((p) => p + 1).join(" > "); };
    const submit = () => {
      if (order.length !== count) { showStatus(`Rank all ${count} responses first.`); return; }
      send({ order });
    };
    document.getElementById("send").addEventListener("click", submit);
    return (event) => {
      if (typing(event)) return;
      const position = Number(event.key) - 1;
      if (Number.isInteger(position) && position >= 0 && position < count && !order.includes(position)) {
        order.push(position); show();
      } else if (event.key === "Backspace") { order.pop(); show(); }
      else if (event.key === "Enter") submit();
    };
  },
  spans(task) {
    const tags = task.dataset.tags.split(",");
    const spans = [];
    const list = document.getElementById("spans");
    const offsetIn = (container, node, offset) => {
      const range = document.createRange();
      range.setStart(container, 0);
      range.setEnd(node, offset);
      return range.toString().length;
    };
    const addSelected = (tag) => {
      const selection = window.getSelection();
      if (!selection.rangeCount || selection.isCollapsed) { showStatus("Select some text first."); return; }
      const range = selection.getRangeAt(0);
      const container = range.startContainer.parentElement.closest(".text.plain");
      if (!container || !container.contains(range.endContainer)) { showStatus("Select text within one response."); return; }
      const start = offsetIn(container, range.startContainer, range.startOffset);
      const end = offsetIn(container, range.endContainer, range.endOffset);
      spans.push({ candidate: Number(container.dataset.position), start, end, tag });
      const item = document.createElement("li");
      item.textContent = `${tag}: “${container.textContent.slice(start, end)}”`;
      list.appendChild(item);
      selection.removeAllRanges();
    };
    document.getElementById("send").addEventListener("click", () => send({ spans }));
    return (event) => {
      if (typing(event)) return;
      const index = Number(event.key) - 1;
      if (Number.isInteger(index) && index >= 0 && index < tags.length) addSelected(tags[index]);
      else if (event.key === "Enter") send({ spans });
    };
  },
  verbal() {
    const text = document.getElementById("feedback");
    const submit = () => {
      if (!text.value.trim()) { showStatus("Write your feedback first."); return; }
      send({ text: text.value });
    };
    document.getElementById("send").addEventListener("click", submit);
    text.focus();
    return (event) => { if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) submit(); };
  },
};

window.addEventListener("storage", (event) => {
  if (event.key !== QUEUE) return;
  showUnsent(unsent());
  if (ownAnswerSent()) location.reload();
});

// Answers queued before entries named their account were given on this browser, almost surely by
// the account whose page loads first: they are kept and named after it, not left waiting forever.
function adoptUnnamed() {
  if (!pageUser) return;
  const list = unsent();
  if (list.some((e) => e.user === undefined)) saveUnsent(list.map((e) => (e.user === undefined ? { ...e, user: pageUser } : e)));
}

document.addEventListener("DOMContentLoaded", () => {
  adoptUnnamed();
  saveUnsent(unsent());
  flush();
  const task = document.getElementById("task");
  if (task) document.addEventListener("keydown", questions[task.dataset.question](task));
});
