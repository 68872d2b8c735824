"""Signing in to ``/freshet/ui`` with the admin key, and every data call the page makes.

The page itself is open and holds no data; its data comes from the admin routes
(``/freshet/*``), which need ``Authorization: Bearer $FRESHET_ADMIN_KEY`` when auth is on.
The server says in ``<body data-auth>`` whether auth is on (``on``, ``off``, or
``unknown`` while the gateway starts). Signed out, the page shows only the sign-in form;
a key is tried on ``/freshet/state`` before it is kept, in this tab's ``sessionStorage``,
and sent as a bearer token on every call (:js:func:`api`), never in a URL. A 401 on any
call (the key changed, or ``auth: auto`` turned on while the page was open) forgets the
key and shows the form again, saying why.

Defines, in the page's script scope: ``api(path, params)`` (JSON), ``download(path,
params, filename)`` (a file, e.g. the CSV report), ``AuthRequired`` (thrown by both on a
401, after the form is shown: views ignore it), ``signedIn()`` and ``startSession()``.
"""

from __future__ import annotations

SESSION_HTML = """
<section id="signin" class="signin" hidden aria-labelledby="signin-title">
  <h2 id="signin-title">Sign in</h2>
  <p><strong>Auth is on.</strong> This gateway's cost, traces and keys are behind its admin
    key: the value of <code>FRESHET_ADMIN_KEY</code> in the gateway's environment.</p>
  <p id="signin-closed" class="error" hidden>This gateway has no <code>FRESHET_ADMIN_KEY</code>
    set, so its admin routes are closed to everyone: set it and restart the gateway.</p>
  <form id="signin-form" autocomplete="off">
    <label for="signin-key">Admin key</label>
    <input id="signin-key" name="key" type="password" autocomplete="off" spellcheck="false"
      required>
    <button id="signin-submit" type="submit">Sign in</button>
  </form>
  <p id="signin-error" class="error" role="alert" hidden></p>
  <p class="muted">The key stays in this browser tab (session storage) until you sign out or
    close the tab. It is sent only to this gateway, as <code>Authorization: Bearer</code>,
    never in a URL.</p>
</section>
"""

SESSION_CSS = """
header.top .session { margin-left: auto; display: flex; align-items: center; gap: 0.8rem; }
header.top .session .muted { font-size: 0.85rem; }
section.signin {
  max-width: 34rem; margin: 3rem auto; padding: 1.5rem 2rem; background: var(--panel);
  border: 1px solid var(--line); border-radius: 8px;
}
section.signin h2 { margin-top: 0; }
section.signin form { display: flex; flex-wrap: wrap; align-items: center; gap: 0.6rem;
  margin: 1rem 0; }
section.signin label { font-weight: 600; }
section.signin input { font: inherit; padding: 0.3rem 0.5rem; flex: 1; min-width: 14rem; }
"""

SESSION_JS = r"""
const KEY_ITEM = "freshet.admin-key";

class AuthRequired extends Error {}

function storedKey() {
  try { return sessionStorage.getItem(KEY_ITEM); } catch (e) { return null; }
}
function forgetKey() {
  try { sessionStorage.removeItem(KEY_ITEM); } catch (e) { /* storage off: nothing kept */ }
}
function signedIn() { return document.body.dataset.session !== "signed-out"; }

async function errorMessage(response, path) {
  const body = await response.json().catch(() => null);
  return body && body.error ? body.error.message : `${response.status} ${path}`;
}

// Every data call: the admin key, when signed in, as a bearer token (never in the URL).
async function request(path, params, accept) {
  const query = params ? String(params) : "";
  const headers = {accept};
  const key = storedKey();
  if (key) headers.authorization = `Bearer ${key}`;
  const response = await fetch(query ? `${path}?${query}` : path,
                               {headers, credentials: "omit", cache: "no-store"});
  if (response.status === 401) {
    const message = await errorMessage(response, path);
    needSignIn(message);
    throw new AuthRequired(message);
  }
  if (!response.ok) throw new Error(await errorMessage(response, path));
  return response;
}

async function api(path, params) {
  return (await request(path, params, "application/json")).json();
}

async function download(path, params, filename) {
  const blob = await (await request(path, params, "*/*")).blob();
  const url = URL.createObjectURL(blob);
  const link = h("a", {href: url, download: filename});
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function sessionHeader() {
  const state = document.getElementById("session-state");
  const mode = document.body.dataset.auth;
  const session = document.body.dataset.session;
  document.getElementById("signout").hidden = session !== "signed-in";
  state.textContent =
    session === "signed-in" ? "auth on · signed in with the admin key"
    : session === "signed-out" ? "auth on · signed out"
    : mode === "off" ? "auth off · open to anyone who can reach this port"
    : "";
}

function showSignIn(message) {
  document.body.dataset.session = "signed-out";
  for (const section of document.querySelectorAll("section.view")) section.hidden = true;
  document.getElementById("nav").hidden = true;
  document.getElementById("signin").hidden = false;
  document.getElementById("signin-closed").hidden = document.body.dataset.adminKey !== "unset";
  const error = document.getElementById("signin-error");
  error.textContent = message || "";
  error.hidden = !message;
  sessionHeader();
  document.getElementById("signin-key").focus();
}

function showApp() {
  document.getElementById("signin").hidden = true;
  document.getElementById("nav").hidden = false;
  sessionHeader();
  show();
}

// A 401 from a data call: the kept key was refused, or auth has just turned on.
function needSignIn(message) {
  if (document.body.dataset.session === "signed-out") return;  // said once is enough
  const had = storedKey() !== null;
  forgetKey();
  document.body.dataset.auth = "on";
  showSignIn(had
    ? `The gateway refused the admin key kept in this tab (${message}). Sign in again.`
    : `Auth is on now: ${message}. Sign in with the admin key.`);
}

async function signIn(event) {
  event.preventDefault();
  const input = document.getElementById("signin-key");
  const button = document.getElementById("signin-submit");
  const error = document.getElementById("signin-error");
  const key = input.value.trim();
  if (!key) return;
  button.disabled = true;
  error.hidden = true;
  try {
    const response = await fetch("/freshet/state", {
      headers: {accept: "application/json", authorization: `Bearer ${key}`},
      credentials: "omit", cache: "no-store",
    });
    if (!response.ok) {
      const message = await errorMessage(response, "/freshet/state");
      throw new Error(response.status === 401
        ? `That key was refused: ${message}.`
        : `The gateway answered ${response.status}: ${message}`);
    }
    try { sessionStorage.setItem(KEY_ITEM, key); } catch (e) {
      throw new Error("This browser keeps no session storage, so the page cannot keep the key.");
    }
    input.value = "";
    document.body.dataset.session = "signed-in";
    showApp();
  } catch (failure) {
    error.textContent = failure.message;
    error.hidden = false;
    input.select();
  } finally {
    button.disabled = false;
  }
}

function signOut() {
  forgetKey();
  // A fresh page: nothing of what was shown stays in the document.
  location.reload();
}

function startSession() {
  document.getElementById("signin-form").addEventListener("submit", signIn);
  document.getElementById("signout").addEventListener("click", signOut);
  if (document.body.dataset.auth === "on" && !storedKey()) {
    showSignIn(null);
    return;
  }
  const mode = document.body.dataset.auth;
  document.body.dataset.session = mode !== "off" && storedKey() ? "signed-in" : "open";
  showApp();
}
"""
