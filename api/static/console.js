// HazWatch operator console (docs/console.md). Plain browser JavaScript, no build step, no
// third-party code. Everything it shows comes from the API with the pasted bearer token; data is
// put into the page with textContent only, never as HTML.
//
// Live updates: the WebSocket /api/v1/stream (token sent as its first message, so it never
// appears in a URL). Every alarm event schedules one debounced reload of the active list and the
// risk picture; a "raised" or "escalated" event that is not suppressed pops up a banner and
// plays a tone. A periodic reload is the safety net; the stream reconnects with backoff.
"use strict";

(() => {
  const TOKEN_KEY = "hazwatch.console.token";
  const TIERS = {
    0: { name: "NORMAL", level: "" },
    1: { name: "BLUE", level: "IV" },
    2: { name: "YELLOW", level: "III" },
    3: { name: "ORANGE", level: "II" },
    4: { name: "RED", level: "I" },
  };
  const STATES = { // in the lists
    active_unacked: "UNACKED",
    active_acked: "acked",
    cleared_unacked: "CLEARED UNACKED",
    closed: "closed",
  };
  const STATES_LONG = { // in the detail panel and messages
    active_unacked: "ACTIVE, NOT ACKNOWLEDGED",
    active_acked: "active, acknowledged",
    cleared_unacked: "CLEARED, NOT ACKNOWLEDGED",
    closed: "closed (cleared and acknowledged)",
  };
  const ACK_COMMENT_FROM_TIER = 3; // orange and red need a comment to acknowledge
  const REFRESH_LIVE_MS = 30000; // safety-net reload while the stream is live
  const REFRESH_DOWN_MS = 10000; // and while it is not
  const DEBOUNCE_MS = 250;
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const OFFLINE_AFTER_FAILURES = 3;
  const MAX_BANNERS = 4;
  const ACTIVE_LIMIT = 500;
  const HISTORY_LIMIT = 50;

  const $ = (id) => document.getElementById(id);

  const app = {
    token: null,
    me: null,
    ws: null,
    wsLive: false, // the stream said hello: events flow
    wsFailures: 0,
    reconnectTimer: null,
    countdownTimer: null,
    refreshTimer: null,
    signInTimer: null,
    debounceTimer: null,
    seq: { risk: 0, active: 0, history: 0 }, // a slow answer never overwrites a newer one
    active: [],
    seenTier: null, // alarm id -> its tier when last seen (null until the first load)
    banners: [],
    unseen: 0,
    history: { offset: 0, query: null, nextOffset: null },
    detail: { id: null, alarm: null, maxEventId: 0, opener: null },
  };

  // DOM helpers ---------------------------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function tierText(tier) {
    const t = TIERS[tier] || { name: `TIER ${tier}`, level: "" };
    return t.level ? `${t.name} · ${t.level}` : t.name;
  }

  function tierBadge(tier, prefix) {
    return el("span", { class: `badge tier-${tier}`, "data-tier": tier },
      prefix ? `${prefix} ${tierText(tier)}` : tierText(tier));
  }

  function fmtTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    const now = new Date();
    const pad = (n) => String(n).padStart(2, "0");
    const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    if (d.toDateString() === now.toDateString()) return hms;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
  }

  function timeCell(iso) {
    return el("time", { datetime: iso, title: iso }, fmtTime(iso));
  }

  function fmtValue(value) {
    if (value === null || value === undefined) return "—";
    const v = Number(value);
    if (Math.abs(v) >= 1000) return String(Math.round(v));
    return String(Number(v.toPrecision(4))); // 85, 42.5, 0.01234: no padding zeros
  }

  function setText(id, text) {
    $(id).textContent = text;
  }

  function can(permission) {
    return Boolean(app.me && app.me.permissions.includes(permission));
  }

  // API -----------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }

    describe() {
      return this.status ? `${this.message} (HTTP ${this.status} ${this.code})` : this.message;
    }
  }

  async function api(path, options) {
    const opts = options || {};
    const headers = { Accept: "application/json", Authorization: `Bearer ${app.token}` };
    let body;
    if (opts.body !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(opts.body);
    }
    let response;
    try {
      response = await fetch(path, {
        method: opts.method || "GET", headers, body, cache: "no-store", credentials: "omit",
      });
    } catch (err) {
      throw new ApiError(0, "network", `the server cannot be reached (${err.message})`);
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      const error = data && data.error ? data.error : {};
      const failure = new ApiError(response.status, error.code || "http_error",
        error.message || `${response.status} ${response.statusText}`);
      if (response.status === 401) signOut(`Signed out: the token was refused. ${failure.describe()}`);
      throw failure;
    }
    return data;
  }

  function showGlobalError(message) {
    const box = $("global-error");
    box.textContent = message || "";
    box.hidden = !message;
  }

  // Sign in and out -----------------------------------------------------------------------------

  async function signIn(token) {
    app.token = token;
    try {
      app.me = await api("/api/v1/me");
    } catch (err) {
      app.token = null;
      const why = err.describe ? err.describe() : err.message;
      if (err.status === 401 || err.status === 403) {
        sessionStorage.removeItem(TOKEN_KEY);
        setText("signin-error", `Sign-in failed: ${why}`);
        return;
      }
      // The server or its database is away (a restart, an outage): keep the token and retry,
      // so a reload during a restart does not sign the control room out.
      setText("signin-error", `The server did not answer: ${why}. Retrying in 5 s...`);
      clearTimeout(app.signInTimer);
      app.signInTimer = setTimeout(() => signIn(token), 5000);
      return;
    }
    clearTimeout(app.signInTimer);
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    setText("signin-error", "");
    showSignedIn();
    await Promise.allSettled([loadSites(), refreshAll()]);
    connectStream();
  }

  function showSignedIn() {
    const who = $("who");
    who.replaceChildren(
      "Signed in as ", el("span", { id: "who-name" }, app.me.name),
      el("span", { class: "role", id: "who-role" }, app.me.role),
      el("span", { class: "muted" }, app.me.sites ? ` sites: ${app.me.sites.join(", ")}` : ""),
    );
    who.hidden = false;
    $("signout").hidden = false;
    $("signin").hidden = true;
    $("app").hidden = false;
    for (const form of document.querySelectorAll("[data-perm]")) {
      form.hidden = !can(form.dataset.perm);
    }
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    app.token = null;
    app.me = null;
    app.seenTier = null;
    clearTimeout(app.signInTimer);
    closeStream();
    clearTimeout(app.refreshTimer);
    clearTimeout(app.debounceTimer);
    closeDetail();
    $("who").hidden = true;
    $("signout").hidden = true;
    $("app").hidden = true;
    $("signin").hidden = false;
    $("banners").replaceChildren();
    app.banners = [];
    setUnseen(0);
    setConn("offline", "OFFLINE (signed out)");
    setText("signin-error", message || "");
    $("token").focus();
  }

  // Loading -------------------------------------------------------------------------------------

  async function refreshAll() {
    clearTimeout(app.refreshTimer);
    const results = await Promise.allSettled([loadRisk(), loadActive()]);
    const failed = results.find((r) => r.status === "rejected");
    if (!app.token) return;
    if (failed) {
      const err = failed.reason;
      showGlobalError(`Could not refresh at ${fmtTime(new Date().toISOString())}: ` +
        `${err.describe ? err.describe() : err.message}. The lists may be out of date.`);
    } else {
      showGlobalError("");
      setText("refreshed", `updated ${fmtTime(new Date().toISOString())}`);
    }
    const live = app.ws && app.ws.readyState === WebSocket.OPEN && app.wsLive;
    app.refreshTimer = setTimeout(refreshAll, live ? REFRESH_LIVE_MS : REFRESH_DOWN_MS);
  }

  function scheduleRefresh() {
    clearTimeout(app.debounceTimer);
    app.debounceTimer = setTimeout(() => {
      refreshAll();
      if (isHistoryShown() && app.history.query !== null) loadHistory();
    }, DEBOUNCE_MS);
  }

  async function loadSites() {
    const sites = await api("/api/v1/sites");
    const select = $("history-site");
    select.replaceChildren(el("option", { value: "" }, "any"),
      ...sites.map((s) => el("option", { value: s.key }, `${s.name} (${s.key})`)));
  }

  async function loadRisk() {
    const seq = ++app.seq.risk;
    const picture = await api("/api/v1/risk");
    if (seq !== app.seq.risk) return;
    const box = $("risk");
    if (!picture.sites.length) {
      box.replaceChildren(el("p", { class: "muted" }, "No sites in your scope."));
      return;
    }
    box.replaceChildren(...picture.sites.map((site) => el("section",
      { class: "risk-site", "data-site": site.site },
      el("h3", {}, site.name, tierBadge(site.level.tier)),
      el("div", { class: "tiles" }, ...site.assets.map(riskTile)),
    )));
  }

  function riskTile(asset) {
    const counts = [`${asset.active_alarms} active alarm${asset.active_alarms === 1 ? "" : "s"}`];
    if (asset.suppressed_alarms) counts.push(`${asset.suppressed_alarms} shelved / out of service`);
    return el("div", {
      class: `tile tier-${asset.level.tier}`, "data-asset": asset.asset,
      "data-tier": asset.level.tier,
    },
    el("div", { class: "tile-level" }, tierText(asset.level.tier)),
    el("div", { class: "tile-name" }, `${asset.name} (${asset.asset})`),
    el("div", { class: "tile-detail" },
      `static ${TIERS[asset.static.tier].name} · live ${TIERS[asset.dynamic.tier].name}`),
    el("div", { class: "tile-detail" }, counts.join(" · ")),
    );
  }

  function rank(a) {
    // Highest tier first; a cleared alarm still waiting for its acknowledgement ranks by the
    // tier it reached, after the active ones of that tier.
    return a.tier > 0 ? a.tier * 2 + 1 : a.max_tier * 2;
  }

  async function loadActive() {
    const seq = ++app.seq.active;
    const page = await api(`/api/v1/alarms?open=true&sort=-tier&limit=${ACTIVE_LIMIT}`);
    if (seq !== app.seq.active) return;
    app.active = page.items.slice().sort((a, b) => rank(b) - rank(a)
      || Date.parse(b.raised_at) - Date.parse(a.raised_at) || b.alarm_id - a.alarm_id);
    const unacked = app.active.filter((a) => a.state.endsWith("_unacked")).length;
    setText("active-count", `(${app.active.length})`);
    setText("active-note", page.total > page.items.length
      ? `Showing the ${page.items.length} highest of ${page.total} open alarms; ${unacked} unacknowledged.`
      : `${page.total} open alarm${page.total === 1 ? "" : "s"}; ${unacked} unacknowledged.`);
    renderAlarms($("active-table"), app.active, "No open alarms.");
    announceMissed(app.active);
  }

  // The stream announces new alarms as they happen. An alarm the stream did not bring (it was
  // down, or the server said "resync") shows up in a reload instead: announce it then, once.
  function announceMissed(alarms) {
    const before = app.seenTier;
    app.seenTier = new Map(alarms.map((a) => [a.alarm_id, a.tier]));
    if (before === null) return; // the first picture after signing in: nothing is "new"
    for (const a of alarms.slice().reverse()) { // lowest first, so the highest ends on top
      const was = before.get(a.alarm_id);
      if (a.state !== "active_unacked" || a.suppressed || a.tier === 0) continue;
      if (was !== undefined && was >= a.tier) continue;
      announce({
        alarm_id: a.alarm_id, kind: was ? "escalated" : "raised", tier: a.tier,
        sensor: a.sensor, asset: a.asset, site: a.site, rule: a.rule, value: a.value,
        ts: was ? a.updated_at : a.raised_at,
      });
    }
  }

  function renderAlarms(table, alarms, emptyText) {
    const body = table.tBodies[0];
    if (!alarms.length) {
      body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: 8 }, emptyText)));
      return;
    }
    body.replaceChildren(...alarms.map(alarmRow));
  }

  function alarmRow(a) {
    const unacked = a.state.endsWith("_unacked");
    const flags = [];
    if (a.shelved_until && a.suppressed) flags.push(el("span", { class: "flag" }, "SHELVED"));
    if (a.out_of_service) flags.push(el("span", { class: "flag" }, "OUT OF SERVICE"));
    if (a.predicted) flags.push(el("span", { class: "flag" }, "PREDICTED"));
    const tier = a.tier > 0
      ? tierBadge(a.tier)
      : el("span", {}, tierBadge(0), el("span", { class: "muted" }, ` was ${TIERS[a.max_tier].name}`));
    const open = () => openDetail(a.alarm_id, row);
    const row = el("tr", {
      class: `${unacked ? "unacked" : "acked"}${app.detail.id === a.alarm_id ? " selected" : ""}`,
      "data-alarm-id": a.alarm_id, "data-state": a.state, "data-tier": a.tier, onclick: open,
    },
    el("td", {}, tier),
    el("td", {}, el("span", { class: unacked ? "state-flag state-unacked" : "" }, STATES[a.state]),
      ...flags),
    el("td", {}, `${a.site} / ${a.asset}`),
    el("td", {}, el("button", {
      type: "button", class: "open-detail", title: `Details of alarm ${a.alarm_id}`,
      onclick: (ev) => { ev.stopPropagation(); open(); },
    }, a.sensor || `${a.asset} (vote)`)),
    el("td", {}, a.rule),
    el("td", {}, fmtValue(a.value)),
    el("td", {}, timeCell(a.raised_at)),
    el("td", {}, a.assignee || ""),
    );
    return row;
  }

  // History -------------------------------------------------------------------------------------

  function isHistoryShown() {
    return !$("view-history").hidden;
  }

  function historyQuery(form) {
    const params = new URLSearchParams();
    const data = new FormData(form);
    for (const name of ["state", "min_tier", "site"]) {
      if (data.get(name)) params.set(name, data.get(name));
    }
    for (const name of ["since", "until"]) {
      const value = data.get(name);
      if (value) params.set(name, new Date(value).toISOString()); // the browser's time zone
    }
    params.set("sort", "-raised_at");
    params.set("limit", String(HISTORY_LIMIT));
    return params;
  }

  async function loadHistory() {
    const params = new URLSearchParams(app.history.query);
    params.set("offset", String(app.history.offset));
    const seq = ++app.seq.history;
    let page;
    try {
      page = await api(`/api/v1/alarms?${params}`);
    } catch (err) {
      if (seq !== app.seq.history) return;
      setText("history-error", `Search refused: ${err.describe ? err.describe() : err.message}`);
      return;
    }
    if (seq !== app.seq.history) return;
    setText("history-error", "");
    renderAlarms($("history-table"), page.items, "No alarms match these filters.");
    app.history.nextOffset = page.next_offset;
    const first = page.items.length ? page.offset + 1 : 0;
    setText("history-page", `${first}–${page.offset + page.items.length} of ${page.total}`);
    $("history-prev").disabled = page.offset === 0;
    $("history-next").disabled = page.next_offset === null;
  }

  function showTab(name) {
    const history = name === "history";
    $("tab-active").setAttribute("aria-selected", String(!history));
    $("tab-history").setAttribute("aria-selected", String(history));
    $("view-active").hidden = history;
    $("view-history").hidden = !history;
    if (history && app.history.query === null) {
      app.history.query = historyQuery($("history-form"));
      loadHistory();
    }
  }

  // Live stream ---------------------------------------------------------------------------------

  function setConn(kind, text) {
    const button = $("conn");
    button.className = `conn conn-${kind}`;
    button.dataset.state = kind;
    setText("conn-text", text);
  }

  function connectStream() {
    closeStream();
    if (!app.token) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/api/v1/stream?latest=false`);
    app.ws = ws;
    app.wsLive = false;
    if (app.wsFailures === 0) setConn("reconnecting", "CONNECTING");
    ws.addEventListener("open", () => ws.send(JSON.stringify({ token: app.token })));
    ws.addEventListener("message", (msg) => {
      if (ws !== app.ws) return;
      let message;
      try {
        message = JSON.parse(msg.data);
      } catch {
        return;
      }
      onStreamMessage(message);
    });
    ws.addEventListener("close", (ev) => {
      if (ws !== app.ws) return;
      app.ws = null;
      app.wsLive = false;
      onStreamClosed(ev);
    });
  }

  function closeStream() {
    clearTimeout(app.reconnectTimer);
    clearInterval(app.countdownTimer);
    if (app.ws) {
      const ws = app.ws;
      app.ws = null;
      ws.close(1000, "console closed");
    }
  }

  function onStreamMessage(message) {
    switch (message.type) {
      case "hello":
        app.wsFailures = 0;
        app.wsLive = true;
        setConn("live", "LIVE");
        refreshAll(); // events before this moment (a first connection, a gap) were not seen
        break;
      case "alarm_event":
        onAlarmEvent(message.event || {});
        break;
      case "resync":
        refreshAll();
        break;
      default:
        break;
    }
  }

  function onStreamClosed(ev) {
    if (!app.token) return;
    if (ev.code === 4401) {
      signOut(`Signed out: the live stream refused the token (${ev.reason || "4401"}).`);
      return;
    }
    app.wsFailures += 1;
    const rateLimited = ev.code === 4429;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (app.wsFailures - 1));
    const delay = rateLimited ? 60000 : Math.round(base * (0.8 + Math.random() * 0.4));
    const offline = app.wsFailures >= OFFLINE_AFTER_FAILURES || !navigator.onLine;
    const due = Date.now() + delay;
    const show = () => {
      const left = Math.max(0, Math.ceil((due - Date.now()) / 1000));
      setConn(offline ? "offline" : "reconnecting",
        `${offline ? "OFFLINE" : "RECONNECTING"}: retry in ${left} s`);
    };
    show();
    clearInterval(app.countdownTimer);
    app.countdownTimer = setInterval(show, 1000);
    clearTimeout(app.reconnectTimer);
    app.reconnectTimer = setTimeout(() => {
      clearInterval(app.countdownTimer);
      connectStream();
    }, delay);
    // Refresh sooner while the stream is down: the lists are the only source now.
    clearTimeout(app.refreshTimer);
    app.refreshTimer = setTimeout(refreshAll, REFRESH_DOWN_MS);
  }

  function onAlarmEvent(event) {
    scheduleRefresh();
    if ((event.kind === "raised" || event.kind === "escalated") && !event.suppressed) {
      announce(event);
    }
    if (app.seenTier !== null && event.alarm_id !== undefined) {
      app.seenTier.set(event.alarm_id, event.tier);
    }
    if (event.alarm_id === app.detail.id && event.event_id > app.detail.maxEventId) {
      const who = event.actor && event.actor !== "engine" ? ` by ${event.actor}` : "";
      setText("detail-changed-text",
        `Changed since you opened it: ${event.kind}${who} at ${fmtTime(event.ts)}.`);
      $("detail-changed").hidden = false;
    }
  }

  // New-alarm banners and sound -----------------------------------------------------------------

  function announce(event) {
    const shown = app.banners.some((b) => Number(b.dataset.alarmId) === event.alarm_id
      && Number(b.dataset.tier) >= event.tier);
    if (shown) return;
    const verb = event.kind === "escalated" ? "ESCALATED TO" : "NEW";
    const what = event.sensor || event.asset;
    const banner = el("div", {
      class: `banner tier-${event.tier}`, role: "alert", "data-alarm-id": event.alarm_id,
      "data-tier": event.tier,
    },
    el("strong", {}, `${verb} ${tierText(event.tier)} ALARM`),
    el("span", { class: "banner-text" },
      `${what} · ${event.rule} · value ${fmtValue(event.value)} · ${event.site}/${event.asset}` +
      ` · ${fmtTime(event.ts)}`),
    el("button", { type: "button", class: "banner-open", onclick: () => {
      dismiss(banner);
      openDetail(event.alarm_id, null);
    } }, "Open"),
    el("button", { type: "button", class: "banner-dismiss", onclick: () => dismiss(banner) },
      "Dismiss"),
    );
    app.banners.unshift(banner);
    setUnseen(app.unseen + 1);
    renderBanners();
    sound.play(event.tier);
  }

  function dismiss(banner) {
    app.banners = app.banners.filter((b) => b !== banner);
    setUnseen(Math.max(0, app.unseen - 1));
    renderBanners();
  }

  function renderBanners() {
    const shown = app.banners.slice(0, MAX_BANNERS);
    const more = app.banners.length - shown.length;
    const extra = more > 0 ? [el("p", { class: "banner-more" },
      `and ${more} more new alarm${more === 1 ? "" : "s"} (see the active list) `,
      el("button", { type: "button", onclick: () => {
        app.banners = [];
        setUnseen(0);
        renderBanners();
      } }, "Dismiss all"))] : [];
    $("banners").replaceChildren(...shown, ...extra);
  }

  function setUnseen(n) {
    app.unseen = n;
    document.title = n > 0 ? `(${n} new) HazWatch console` : "HazWatch operator console";
  }

  // Browsers start audio only after a user gesture: the sound button is that gesture. Tones are
  // generated with the Web Audio API (nothing to download). Several alarms within a moment make
  // one sound, for the highest tier among them.
  const sound = {
    ctx: null,
    mode: "off", // off (never enabled in this tab), on, muted
    pending: 0,
    timer: null,
    lastAt: 0,
    played: 0,

    toggle() {
      if (this.mode === "on") {
        this.mode = "muted";
      } else {
        if (!this.ctx) {
          const Ctx = window.AudioContext || window.webkitAudioContext;
          if (!Ctx) {
            setText("sound", "No sound in this browser");
            return;
          }
          this.ctx = new Ctx();
        }
        this.ctx.resume();
        this.mode = "on";
        this.tone(1, this.ctx.currentTime + 0.05); // a short confirmation beep
      }
      this.render();
    },

    render() {
      const button = $("sound");
      button.className = `sound-${this.mode}`;
      button.dataset.mode = this.mode;
      button.setAttribute("aria-pressed", String(this.mode === "on"));
      button.textContent = {
        off: "Sound off: press to enable",
        on: "Sound on: press to mute",
        muted: "Muted: press for sound",
      }[this.mode];
    },

    play(tier) {
      this.pending = Math.max(this.pending, tier);
      if (this.timer) return;
      const wait = Math.max(100, this.lastAt + 1500 - Date.now());
      this.timer = setTimeout(() => {
        const top = this.pending;
        this.pending = 0;
        this.timer = null;
        if (this.mode !== "on" || !this.ctx) return;
        if (this.ctx.state === "suspended") this.ctx.resume();
        const pulses = top >= 4 ? 3 : top >= 3 ? 2 : 1;
        let at = this.ctx.currentTime + 0.02;
        for (let i = 0; i < pulses; i += 1) {
          this.tone(top, at);
          at += 0.32;
        }
        this.lastAt = Date.now();
        this.played += 1;
        $("sound").dataset.played = String(this.played);
      }, wait);
    },

    tone(tier, at) {
      const freq = { 1: 523, 2: 659, 3: 784, 4: 988 }[tier] || 523;
      const osc = this.ctx.createOscillator();
      const gain = this.ctx.createGain();
      osc.type = "triangle";
      osc.frequency.setValueAtTime(freq, at);
      gain.gain.setValueAtTime(0.0001, at);
      gain.gain.exponentialRampToValueAtTime(0.35, at + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, at + 0.25);
      osc.connect(gain).connect(this.ctx.destination);
      osc.start(at);
      osc.stop(at + 0.27);
    },
  };

  // Alarm detail and actions --------------------------------------------------------------------

  async function openDetail(alarmId, opener) {
    app.detail.opener = opener || document.activeElement;
    app.detail.id = alarmId;
    for (const row of document.querySelectorAll("tr.selected")) row.classList.remove("selected");
    for (const row of document.querySelectorAll(`tr[data-alarm-id="${alarmId}"]`)) {
      row.classList.add("selected");
    }
    setText("action-result", "");
    setText("action-error", "");
    for (const input of document.querySelectorAll(".actions input[type=text], .actions textarea")) {
      input.value = "";
    }
    $("detail").hidden = false;
    document.body.classList.add("detail-open");
    await loadDetail();
    $("detail-close").focus();
  }

  async function loadDetail() {
    const alarmId = app.detail.id;
    let alarm;
    try {
      alarm = await api(`/api/v1/alarms/${alarmId}`);
    } catch (err) {
      setText("action-error", `Could not load alarm ${alarmId}: ${err.describe ? err.describe() : err.message}`);
      return;
    }
    if (alarmId !== app.detail.id) return;
    app.detail.alarm = alarm;
    app.detail.maxEventId = Math.max(0, ...alarm.events.map((e) => e.event_id));
    $("detail-changed").hidden = true;
    renderDetail(alarm);
  }

  function renderDetail(a) {
    setText("detail-title", `Alarm ${a.alarm_id}: ${a.sensor || a.asset} ${a.rule}`);
    const field = (name, ...value) => [el("dt", {}, name), el("dd", {}, ...value)];
    const shelved = a.shelved_until
      ? [`until ${fmtTime(a.shelved_until)}`, a.shelve_reason ? ` (${a.shelve_reason})` : ""].join("")
      : "no";
    $("detail-fields").replaceChildren(
      ...field("Tier now", tierBadge(a.tier)),
      ...field("Highest tier", tierBadge(a.max_tier)),
      ...field("State", el("span", { id: "detail-state", "data-state": a.state },
        STATES_LONG[a.state])),
      ...field("Site / asset", `${a.site} / ${a.asset}`),
      ...field("Sensor", a.sensor || "(asset vote)"),
      ...field("Rule", a.rule, a.predicted ? " (predicted by trend)" : ""),
      ...field("Value", fmtValue(a.value)),
      ...field("Raised", timeCell(a.raised_at)),
      ...field("Cleared", a.cleared_at ? timeCell(a.cleared_at) : "not yet"),
      ...field("Acknowledged", a.acked_at ? el("span", {}, timeCell(a.acked_at), ` by ${a.acked_by}`) : "no"),
      ...field("Assignee", a.assignee || "nobody"),
      ...field("Shelved", shelved),
      ...field("Out of service", a.out_of_service ? "yes" : "no"),
    );
    const needsComment = Math.max(a.tier, a.max_tier) >= ACK_COMMENT_FROM_TIER;
    setText("ack-required", needsComment ? "(required for orange and red)" : "(optional)");
    $("ack-form").hidden = !can("acknowledge") || !a.state.endsWith("_unacked");
    $("shelve-form").hidden = !can("shelve") || a.state === "closed";
    $("unshelve-form").hidden = !can("shelve") || !a.shelved_until;
    $("assign-form").hidden = !can("assign") || a.state === "closed";
    $("comment-form").hidden = !can("comment");
    $("oos-form").hidden = !can("out_of_service") || (a.state === "closed" && !a.out_of_service);
    setText("oos-button", a.out_of_service ? "Return to service" : "Take out of service");
    $("events-table").tBodies[0].replaceChildren(...a.events.slice().reverse().map((e) => el("tr",
      { "data-kind": e.kind },
      el("td", {}, timeCell(e.ts)),
      el("td", {}, e.kind),
      el("td", {}, tierBadge(e.tier)),
      el("td", {}, fmtValue(e.value)),
      el("td", {}, e.actor || ""),
      el("td", {}, [e.comment || "", describeDetails(e.details)].filter(Boolean).join(" · ")),
    )));
  }

  function describeDetails(details) {
    if (!details) return "";
    return Object.entries(details).map(([k, v]) => {
      if (k === "from" && TIERS[v]) return `from ${TIERS[v].name}`;
      if (k === "until") return `until ${fmtTime(v)}`;
      return `${k}: ${v === null ? "none" : v}`;
    }).join(", ");
  }

  function closeDetail() {
    if ($("detail").hidden) return;
    $("detail").hidden = true;
    document.body.classList.remove("detail-open");
    app.detail.id = null;
    app.detail.alarm = null;
    for (const row of document.querySelectorAll("tr.selected")) row.classList.remove("selected");
    const back = app.detail.opener;
    app.detail.opener = null;
    if (back && document.contains(back)) back.focus();
  }

  async function act(path, body, done) {
    const alarmId = app.detail.id;
    setText("action-result", "");
    setText("action-error", "");
    const buttons = document.querySelectorAll(".actions button");
    for (const b of buttons) b.disabled = true;
    try {
      const result = await api(`/api/v1/alarms/${alarmId}/${path}`, { method: "POST", body });
      setText("action-result",
        `${done}: alarm ${result.alarm_id} is now ${STATES_LONG[result.state]}.`);
      for (const input of document.querySelectorAll(".actions input[type=text], .actions textarea")) {
        input.value = "";
      }
      scheduleRefresh();
      await loadDetail();
    } catch (err) {
      setText("action-error", `Refused: ${err.describe ? err.describe() : err.message}`);
    } finally {
      for (const b of buttons) b.disabled = false;
    }
  }

  function required(input, message) {
    if (input.value.trim()) return input.value.trim();
    setText("action-error", message);
    input.focus();
    return null;
  }

  function wireActions() {
    $("ack-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const a = app.detail.alarm;
      const input = $("ack-comment");
      const text = input.value.trim();
      if (!text && a && Math.max(a.tier, a.max_tier) >= ACK_COMMENT_FROM_TIER) {
        required(input, "A comment is required to acknowledge an orange or red alarm.");
        return;
      }
      act("ack", { comment: text || null }, "Acknowledged");
    });
    $("shelve-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const reason = required($("shelve-reason"), "A shelve needs a reason.");
      if (reason === null) return;
      act("shelve", { duration_s: Number($("shelve-duration").value), reason }, "Shelved");
    });
    $("unshelve-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const text = $("unshelve-comment").value.trim();
      act("unshelve", { comment: text || null }, "Unshelved");
    });
    $("comment-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const text = required($("comment-text"), "Write the comment first.");
      if (text !== null) act("comment", { comment: text }, "Comment added");
    });
    $("assign-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const name = required($("assign-name"), "Name the user to assign it to.");
      if (name !== null) act("assign", { assignee: name }, `Assigned to ${name}`);
    });
    $("assign-me").addEventListener("click", () => act("assign", { assignee: app.me.name },
      `Assigned to ${app.me.name}`));
    $("assign-none").addEventListener("click", () => act("assign", { assignee: null },
      "Assignment taken back"));
    $("oos-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const reason = required($("oos-reason"), "Give a reason (work order, calibration).");
      if (reason === null) return;
      const out = !app.detail.alarm.out_of_service;
      act("out-of-service", { out_of_service: out, reason },
        out ? "Taken out of service" : "Returned to service");
    });
  }

  // Start ---------------------------------------------------------------------------------------

  function start() {
    $("signin-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const token = $("token").value.trim();
      if (token) signIn(token);
    });
    $("signout").addEventListener("click", () => signOut("Signed out."));
    $("sound").addEventListener("click", () => sound.toggle());
    $("conn").addEventListener("click", () => {
      if (app.token && !app.wsLive) connectStream();
    });
    $("tab-active").addEventListener("click", () => showTab("active"));
    $("tab-history").addEventListener("click", () => showTab("history"));
    for (const tab of document.querySelectorAll("[role=tab]")) {
      tab.addEventListener("keydown", (ev) => { // arrow keys move between the two tabs
        if (ev.key !== "ArrowLeft" && ev.key !== "ArrowRight") return;
        const next = tab.id === "tab-active" ? "history" : "active";
        showTab(next);
        $(`tab-${next}`).focus();
      });
    }
    $("history-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      app.history.query = historyQuery(ev.target);
      app.history.offset = 0;
      loadHistory();
    });
    $("history-prev").addEventListener("click", () => {
      app.history.offset = Math.max(0, app.history.offset - HISTORY_LIMIT);
      loadHistory();
    });
    $("history-next").addEventListener("click", () => {
      if (app.history.nextOffset !== null) {
        app.history.offset = app.history.nextOffset;
        loadHistory();
      }
    });
    $("detail-close").addEventListener("click", closeDetail);
    $("detail-reload").addEventListener("click", loadDetail);
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") closeDetail();
    });
    window.addEventListener("online", () => {
      if (app.token && !app.wsLive) connectStream();
    });
    wireActions();
    sound.render();
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved);
    else $("token").focus();
  }

  start();
})();
