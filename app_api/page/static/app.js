// oO's end-user page: sign up or in, connect Todoist, get a tip and react to it, set quiet hours
// and consents, export or delete the account. Plain JS on the app's /v1 routes; no build step.
//
// Tokens live in this closure only (never in cookies or web storage): the access token goes in
// the Authorization header; the refresh token is spent to renew it shortly before it expires and
// once more when a request answers 401. Refresh tokens rotate and reusing one revokes the whole
// session, so at most one refresh is in flight at a time.
"use strict";

(() => {
  const session = { access: null, refresh: null, timer: null, renewing: null, email: null };
  let profile = null; // the last profile read, so a save replaces only what the form shows
  let decisionId = null; // the decision of the tip on screen, until it is reacted to

  const $ = (id) => document.getElementById(id);
  const reactions = () => document.querySelectorAll("button[data-reaction]");

  // ---- messages --------------------------------------------------------------------------------
  function say(text) {
    $("error").hidden = true;
    $("error").textContent = "";
    $("status").textContent = text;
  }

  function fail(text) {
    $("status").textContent = "";
    $("error").textContent = text;
    $("error").hidden = false;
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // A problem+json body as one sentence: its detail, and for a 422 each invalid field.
  async function problemText(response) {
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      return `the server answered ${response.status}`;
    }
    let text = (body && (body.detail || body.title)) || `the server answered ${response.status}`;
    if (body && Array.isArray(body.errors) && body.errors.length) {
      const fields = body.errors.map((e) => `${e.loc.filter((p) => p !== "body").join(".") || "request"}: ${e.msg}`);
      text += ` (${fields.join("; ")})`;
    }
    return text;
  }

  // ---- tokens ----------------------------------------------------------------------------------
  function keep(pair) {
    session.access = pair.access_token;
    session.refresh = pair.refresh_token;
    clearTimeout(session.timer);
    // Renew a little before expiry (at most every 10 s, so a tiny lifetime cannot spin).
    const inMs = Math.max(10, pair.expires_in - 30) * 1000;
    session.timer = setTimeout(() => renew().catch(() => {}), inMs);
  }

  function forget() {
    clearTimeout(session.timer);
    session.access = session.refresh = session.timer = session.renewing = session.email = null;
    profile = null;
    decisionId = null;
  }

  function renew() {
    if (!session.refresh) return Promise.reject(new ApiError(401, "you are signed out"));
    if (!session.renewing) {
      const spent = session.refresh;
      session.renewing = fetch("/v1/auth/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: spent }),
      })
        .then(async (r) => {
          if (!r.ok) throw new ApiError(r.status, await problemText(r));
          keep(await r.json());
        })
        .catch((e) => {
          if (e instanceof ApiError && e.status === 401) {
            signedOut("Your session has ended; please sign in again.");
          }
          throw e;
        })
        .finally(() => {
          session.renewing = null;
        });
    }
    return session.renewing;
  }

  // ---- the API ---------------------------------------------------------------------------------
  // One call: JSON in and out, the access token attached, renewed once on a 401.
  async function api(method, path, body, retried = false) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (session.access) headers.Authorization = `Bearer ${session.access}`;
    let r;
    try {
      r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      throw new ApiError(0, "the server cannot be reached; check your connection and try again");
    }
    if (r.status === 401 && session.refresh && !retried) {
      await renew();
      return api(method, path, body, true);
    }
    if (!r.ok) throw new ApiError(r.status, await problemText(r));
    if (r.status === 204) return null;
    const type = r.headers.get("Content-Type") || "";
    return type.includes("json") ? r.json() : r.text();
  }

  // Runs a handler with its button disabled, showing any failure.
  function guarded(button, handler) {
    return async (event) => {
      if (event) event.preventDefault();
      if (button) button.disabled = true;
      try {
        await handler(event);
      } catch (e) {
        fail(e instanceof ApiError ? e.message : `something went wrong: ${e}`);
      } finally {
        if (button) button.disabled = false;
      }
    };
  }

  // ---- signing in and out ----------------------------------------------------------------------
  function signedOut(message) {
    forget();
    $("signed-in").hidden = true;
    $("signed-out").hidden = false;
    showTip(null);
    if (message) say(message);
  }

  async function signedIn(pair) {
    keep(pair);
    const me = await api("GET", "/v1/auth/me");
    session.email = me.email;
    $("account-email").textContent = me.email || me.display_name || me.id;
    $("signed-out").hidden = true;
    $("signed-in").hidden = false;
    for (const form of ["signup-form", "signin-form"]) $(form).reset();
    await Promise.all([loadTodoist(), loadProfile(), loadConsents()]);
  }

  async function credentials(form, path, withName) {
    const data = new FormData(form);
    const body = { email: data.get("email").trim(), password: data.get("password") };
    if (withName && data.get("display_name").trim()) body.display_name = data.get("display_name").trim();
    forget();
    return api("POST", path, body);
  }

  // ---- Todoist ---------------------------------------------------------------------------------
  const TODOIST_WORDS = {
    not_connected: "not connected",
    active: "connected",
    needs_reauth: "needs to be connected again",
    revoked: "disconnected",
  };

  function showTodoist(status) {
    $("todoist-status").textContent = TODOIST_WORDS[status.status] || status.status;
    $("todoist-status").dataset.status = status.status;
    const synced = status.last_synced_at ? `last synced ${new Date(status.last_synced_at).toLocaleString()}` : "";
    $("todoist-synced").textContent = status.last_error ? `${synced} (last error: ${status.last_error})` : synced;
    $("todoist-disconnect").hidden = status.status !== "active";
    $("todoist-form").hidden = status.status === "active";
  }

  async function loadTodoist() {
    showTodoist(await api("GET", "/v1/integrations/todoist"));
  }

  // ---- tips and reactions ----------------------------------------------------------------------
  const KIND_WORDS = { todoist_task: "From your Todoist", llm_tip: "A suggestion" };
  const REASON_WORDS = {
    quiet_hours: "It is quiet hours: no tips until they end.",
    no_candidates: "Nothing to suggest right now.",
  };

  function showTip(next) {
    decisionId = next && next.tip ? next.decision_id : null;
    if (!next) {
      $("tip-text").textContent = "Ask for a tip when you are ready.";
      $("tip-kind").textContent = "";
    } else if (next.tip) {
      $("tip-text").textContent = next.tip.content;
      $("tip-kind").textContent = KIND_WORDS[next.tip.kind] || next.tip.kind;
    } else {
      $("tip-text").textContent = REASON_WORDS[next.reason] || "No tip right now.";
      $("tip-kind").textContent = "";
    }
    $("tip").dataset.decisionId = decisionId || "";
    for (const b of reactions()) b.disabled = decisionId === null;
  }

  const REACTED_WORDS = { done: "Marked as done.", snooze: "Snoozed.", dismiss: "Dismissed." };

  async function react(button) {
    if (!decisionId) return;
    const reaction = button.dataset.reaction;
    for (const b of reactions()) b.disabled = true;
    try {
      await api("POST", "/v1/feedback", { decision_id: decisionId, reaction });
    } catch (e) {
      for (const b of reactions()) b.disabled = false; // nothing was recorded: let them try again
      throw e;
    }
    decisionId = null;
    $("tip").dataset.decisionId = "";
    $("tip").dataset.reaction = reaction;
    say(`${REACTED_WORDS[reaction]} Thanks, that helps the next tip.`);
  }

  // ---- quiet hours -----------------------------------------------------------------------------
  function showProfile(p) {
    profile = p;
    const form = $("profile-form");
    form.elements.timezone.value = p.timezone;
    form.elements.quiet_start.value = p.quiet_hours ? p.quiet_hours.start : "";
    form.elements.quiet_end.value = p.quiet_hours ? p.quiet_hours.end : "";
  }

  async function loadProfile() {
    showProfile(await api("GET", "/v1/me/profile"));
  }

  async function saveProfile() {
    const form = $("profile-form");
    const start = form.elements.quiet_start.value;
    const end = form.elements.quiet_end.value;
    if (Boolean(start) !== Boolean(end)) {
      fail("Give both a start and an end for quiet hours, or neither.");
      return;
    }
    const fresh = await api("GET", "/v1/me/profile"); // replace what the form shows, keep the rest
    const body = {
      ...fresh,
      timezone: form.elements.timezone.value.trim(),
      quiet_hours: start ? { start: start.slice(0, 5), end: end.slice(0, 5) } : null,
    };
    showProfile(await api("PUT", "/v1/me/profile", body));
    say(start ? `Quiet hours saved: ${start.slice(0, 5)} to ${end.slice(0, 5)}.` : "Quiet hours removed.");
  }

  // ---- consents --------------------------------------------------------------------------------
  function showConsents(consents) {
    for (const box of $("consents").querySelectorAll("input[type=checkbox]")) {
      box.checked = Boolean(consents.current[box.name]);
    }
  }

  async function loadConsents() {
    showConsents(await api("GET", "/v1/me/consents"));
  }

  async function changeConsent(box) {
    box.disabled = true;
    try {
      showConsents(await api("POST", "/v1/me/consents", { purpose: box.name, granted: box.checked }));
      say(`Consent ${box.checked ? "given" : "withdrawn"}: ${box.parentElement.textContent.trim()}.`);
    } catch (e) {
      box.checked = !box.checked; // not recorded: show what holds
      throw e;
    } finally {
      box.disabled = false;
    }
  }

  // ---- export and delete -----------------------------------------------------------------------
  async function exportData() {
    say("Gathering your data…");
    const data = await api("GET", "/v1/me/export");
    const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = "oo-export.json";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    say("Your data was exported to oo-export.json.");
  }

  async function deleteAccount() {
    await api("DELETE", "/v1/me");
    $("delete-confirm").hidden = true;
    signedOut("Your account and everything oO held about you were deleted.");
  }

  // ---- wiring ----------------------------------------------------------------------------------
  function wire() {
    $("signup-form").addEventListener(
      "submit",
      guarded($("signup-form").querySelector("button"), async () => {
        const pair = await credentials($("signup-form"), "/v1/auth/register", true);
        await signedIn(pair);
        say("Welcome! Your account is ready.");
      }),
    );
    $("signin-form").addEventListener(
      "submit",
      guarded($("signin-form").querySelector("button"), async () => {
        const pair = await credentials($("signin-form"), "/v1/auth/login", false);
        await signedIn(pair);
        say("Signed in.");
      }),
    );
    $("signout").addEventListener(
      "click",
      guarded($("signout"), async () => {
        const spent = session.refresh;
        try {
          if (spent) await api("POST", "/v1/auth/logout", { refresh_token: spent });
        } finally {
          signedOut("Signed out.");
        }
      }),
    );
    $("todoist-form").addEventListener(
      "submit",
      guarded($("todoist-form").querySelector("button"), async () => {
        const token = new FormData($("todoist-form")).get("token").trim();
        if (!token) {
          fail("Paste your Todoist API token first.");
          return;
        }
        showTodoist(await api("POST", "/v1/integrations/todoist", { token }));
        $("todoist-form").reset();
        say("Todoist is connected; your tasks will be synced.");
      }),
    );
    $("todoist-disconnect").addEventListener(
      "click",
      guarded($("todoist-disconnect"), async () => {
        showTodoist(await api("DELETE", "/v1/integrations/todoist"));
        say("Todoist is disconnected and its token deleted.");
      }),
    );
    $("next-tip").addEventListener(
      "click",
      guarded($("next-tip"), async () => {
        showTip(await api("GET", "/v1/tips/next"));
        delete $("tip").dataset.reaction;
        say("");
      }),
    );
    for (const b of reactions()) {
      b.addEventListener(
        "click",
        guarded(null, () => react(b)),
      );
    }
    $("profile-form").addEventListener("submit", guarded($("profile-form").querySelector("button"), saveProfile));
    $("consents").addEventListener("change", (event) => {
      if (event.target.matches("input[type=checkbox]")) guarded(null, () => changeConsent(event.target))();
    });
    $("export").addEventListener("click", guarded($("export"), exportData));
    $("delete").addEventListener("click", () => {
      $("delete-confirm").hidden = false;
    });
    $("delete-no").addEventListener("click", () => {
      $("delete-confirm").hidden = true;
    });
    $("delete-yes").addEventListener("click", guarded($("delete-yes"), deleteAccount));
    document.body.dataset.ready = "true";
  }

  wire();
})();
