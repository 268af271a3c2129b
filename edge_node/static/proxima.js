/* Proxima browser snippet v1: events, recommendations, live updates. See docs/snippet.md. */
(() => {
  "use strict";
  const w = window, d = document;
  if (w.proxima && w.proxima.version) return;
  const tag = d.currentScript;
  const opt = (name, dflt) => (tag && tag.getAttribute("data-" + name)) || dflt;
  const origin = tag && tag.src ? new URL(tag.src).origin : location.origin;
  const edge = opt("edge", origin).replace(/\/+$/, "");
  const cfg = {
    slot: opt("slot", ""),
    k: +opt("k", 8) || 8,
    batch: Math.min(+opt("batch-size", 20) || 20, 100),
    flushMs: +opt("flush-ms", 1000) || 1000,
  };
  const URGENT = new Set(
    ["view", "click", "add_to_cart", "remove_from_cart", "purchase", "search"]);
  const MAX_QUEUE = 500, MAX_TRIES = 8, PENDING = "proxima_pending";
  const stats = { sent: 0, accepted: 0, duplicate: 0, rejected: 0, retried: 0, dropped: 0,
    beacons: 0, messages: 0, renders: 0 };
  let user = opt("user", "");
  // data-consent="required": nothing is collected or stored until proxima.consent(true).
  let consented = opt("consent", "granted") !== "required";
  // The site key (publishable, bound to this page's origin at the edge) goes in the URL:
  // a header would cost a preflight, and sendBeacon cannot set one.
  let siteKey = opt("key", "");
  const eventsUrl = () =>
    edge + "/v1/events" + (siteKey ? "?key=" + encodeURIComponent(siteKey) : "");

  const uid = () => {
    const c = w.crypto;
    if (c && c.randomUUID) return c.randomUUID();
    const b = new Uint8Array(16);
    if (c && c.getRandomValues) c.getRandomValues(b);
    else for (let i = 0; i < 16; i++) b[i] = Math.random() * 256;
    return Array.from(b, (x) => (x + 256).toString(16).slice(1)).join("");
  };
  const store = (key, value) => {
    try {
      if (value === undefined) return sessionStorage.getItem(key);
      sessionStorage.setItem(key, value);
    } catch (e) { /* storage off: the cookie keeps the session */ }
    return null;
  };
  const sid = opt("session", "") || store("proxima_sid") || (() => {
    const cookie = d.cookie.match(/(?:^|; )proxima_sid=([\w-]{8,64})/);
    const id = cookie ? cookie[1] : "s-" + uid();
    if (consented) {
      store("proxima_sid", id);
      d.cookie = "proxima_sid=" + id + "; path=/; SameSite=Lax";
    }
    return id;
  })();
  const clean = (o) => {
    const out = {};
    for (const key in o) {
      const v = o[key];
      if (v != null && v !== "" && !Number.isNaN(v)) out[key] = v;
    }
    return out;
  };

  // -- events: batched, retried with the same event ids (the edge keeps each id once) ------
  let queue = [], inflight = null, inflightCount = 0, timer = 0, due = 0, delay = 0;
  function track(type, fields) {
    if (!consented) return null;
    const ev = { event_id: uid(), session_id: sid, type, ts: Date.now(), ...clean(fields || {}) };
    if (user && !ev.user_id) ev.user_id = user;
    enqueue([{ ev, tries: 0 }]);
    schedule(URGENT.has(type) || queue.length >= cfg.batch ? 0 : cfg.flushMs);
    return ev.event_id;
  }
  function enqueue(items, front) {
    queue = front ? items.concat(queue) : queue.concat(items);
    const over = queue.length - MAX_QUEUE;
    if (over > 0) stats.dropped += queue.splice(0, over).length;
  }
  function schedule(ms) {
    ms = Math.max(ms, delay);
    if (timer && due <= Date.now() + ms) return;
    clearTimeout(timer);
    due = Date.now() + ms;
    timer = setTimeout(flush, ms);
  }
  function flush() {
    clearTimeout(timer);
    timer = 0;
    if (inflight || !queue.length) return inflight || Promise.resolve();
    const batch = queue.splice(0, cfg.batch);
    inflightCount = batch.length;
    inflight = send(batch).finally(() => {
      inflight = null;
      inflightCount = 0;
      if (queue.length) schedule(0);
    });
    return inflight;
  }
  async function send(batch) {
    const body = JSON.stringify(batch.map((it) => it.ev));
    stats.sent += batch.length;
    let res;
    try {
      // text/plain needs no CORS preflight; the edge reads it as JSON.
      res = await fetch(eventsUrl(), {
        method: "POST", body, credentials: "omit", keepalive: body.length < 60000,
        headers: { "content-type": "text/plain;charset=UTF-8" },
      });
    } catch (e) {
      return retry(batch, 0);
    }
    if (res.status === 202) {
      const out = await res.json().catch(() => ({}));
      stats.accepted += out.accepted || 0;
      stats.duplicate += out.duplicate || 0;
      const again = [];
      for (const r of out.rejections || []) {
        if (r.code === "rate_limited" && batch[r.index]) again.push(batch[r.index]);
        else stats.rejected++;
      }
      delay = 0;
      if (again.length) retry(again, 1);
    } else if (res.status === 429 || res.status >= 500) {
      retry(batch, +res.headers.get("retry-after") || 0);
    } else {
      stats.rejected += batch.length; // a 4xx the same body would get again
    }
  }
  function retry(items, afterS) {
    const keep = items.filter((it) => ++it.tries < MAX_TRIES);
    stats.dropped += items.length - keep.length;
    stats.retried += keep.length;
    const tries = Math.max(0, ...keep.map((it) => it.tries));
    const backoff = Math.min(30000, 500 * 2 ** tries) * (0.5 + Math.random() / 2);
    delay = Math.max(afterS * 1000, backoff);
    enqueue(keep, true);
  }
  // Leaving the page: the browser sends beacons after unload. A string body goes out as
  // text/plain, which needs no preflight. What it refuses waits for the next page.
  function beacon() {
    if (!consented) return;
    let left = [];
    while (queue.length) {
      const chunk = queue.splice(0, cfg.batch);
      const body = JSON.stringify(chunk.map((it) => it.ev));
      if (navigator.sendBeacon && navigator.sendBeacon(eventsUrl(), body)) stats.beacons++;
      else left = left.concat(chunk);
    }
    queue = left;
    store(PENDING, JSON.stringify(left.map((it) => it.ev)));
  }

  // -- recommendations and the live stream ---------------------------------------------------
  function params(o) {
    const p = new URLSearchParams({ session_id: sid, k: String(o.k || cfg.k) });
    if (o.slot || cfg.slot) p.set("slot", o.slot || cfg.slot);
    for (const key in o.context || {}) p.set("ctx." + key, String(o.context[key]));
    return p;
  }
  async function recommendations(o) {
    const url = edge + "/v1/recommendations?" + params(o || {});
    const res = await fetch(url, { credentials: "omit" });
    const body = await res.json();
    if (res.ok) return body;
    const error = body.error || {};
    throw Object.assign(new Error(error.message || "HTTP " + res.status),
      { status: res.status, code: error.code });
  }
  async function similar(itemId, o) {
    const p = new URLSearchParams({ k: String((o && o.k) || cfg.k) });
    if (consented) p.set("session_id", sid);
    if (o && o.slot) p.set("slot", o.slot);
    const url = edge + "/v1/items/" + encodeURIComponent(itemId) + "/similar?" + p;
    const res = await fetch(url, { credentials: "omit" });
    const body = await res.json();
    if (res.ok) return body;
    const error = body.error || {};
    throw Object.assign(new Error(error.message || "HTTP " + res.status),
      { status: res.status, code: error.code });
  }
  function subscribe(onAnswer, o) {
    const url = edge.replace(/^http/, "ws") + "/v1/stream?" + params(o || {});
    let ws, stopped = false, tries = 0, pinger = 0, reopen = 0, heard = 0;
    const open = () => {
      ws = new WebSocket(url);
      ws.onopen = () => {
        heard = Date.now();
        pinger = setInterval(() => {
          if (Date.now() - heard > 60000) ws.close(); // no pong: a dead connection
          else ws.send('{"type":"ping"}');
        }, 25000);
      };
      ws.onmessage = (m) => {
        heard = Date.now();
        tries = 0;
        stats.messages++;
        let msg;
        try { msg = JSON.parse(m.data); } catch (e) { return; }
        if (msg.type === "recommendations") onAnswer(msg);
      };
      ws.onclose = (e) => {
        clearInterval(pinger);
        if (stopped || e.code === 1008) return; // 1008: bad parameters, a retry cannot help
        const backoff = Math.min(30000, 500 * 2 ** tries++) * (0.5 + Math.random() / 2);
        reopen = setTimeout(open, backoff);
      };
    };
    open();
    return () => {
      stopped = true;
      clearTimeout(reopen);
      clearInterval(pinger);
      ws.close(1000);
    };
  }

  // -- tiles: impressions, clicks, and the containers the snippet fills ----------------------
  const impressions = new Map(); // request id -> {slot, items}
  let impressionTimer = 0;
  function impress(tile) {
    const req = tile.dataset.proximaRequest, item = tile.dataset.proximaItem;
    if (!req || !item || tile.dataset.proximaShown === req) return;
    tile.dataset.proximaShown = req;
    const entry = impressions.get(req) || { slot: tile.dataset.proximaSlot, items: [] };
    entry.items.push(item);
    impressions.set(req, entry);
    impressionTimer = impressionTimer || setTimeout(() => {
      impressionTimer = 0;
      for (const [request_id, e] of impressions) {
        for (let i = 0; i < e.items.length; i += 100) {
          const items = e.items.slice(i, i + 100);
          track("impression", { items, request_id, context: clean({ slot: e.slot }) });
        }
      }
      impressions.clear();
    }, 300);
  }
  const io = w.IntersectionObserver && new IntersectionObserver((entries) => {
    for (const e of entries) if (e.isIntersecting) { io.unobserve(e.target); impress(e.target); }
  }, { threshold: 0.5 });
  const observe = (tile) => (io ? io.observe(tile) : impress(tile));
  const scan = (root) =>
    (root || d).querySelectorAll("[data-proxima-item][data-proxima-request]").forEach(observe);
  const itemFields = (el) => {
    const price = el.dataset.proximaPrice;
    return { item_id: el.dataset.proximaItem || el.dataset.proximaView,
      category: el.dataset.proximaCategory, price: price ? +price : undefined };
  };

  function mount(box) {
    if (box.proximaStop) return box.proximaStop;
    const ds = box.dataset;
    const slot = ds.proximaSlot || cfg.slot;
    const o = { k: +ds.proximaK || cfg.k, slot, context: { page: location.pathname } };
    const template = box.querySelector("template");
    const list = box.querySelector("[data-proxima-list]") || box;
    let shown = null;
    const makeTile = (it, requestId) => {
      const tile = template
        ? template.content.firstElementChild.cloneNode(true) : d.createElement("div");
      if (template) {
        tile.querySelectorAll("[data-proxima-field]").forEach((f) => {
          f.textContent = it[f.dataset.proximaField] ?? "";
        });
      } else {
        tile.className = "proxima-tile";
        tile.textContent = it.item_id;
      }
      Object.assign(tile.dataset,
        { proximaItem: it.item_id, proximaRequest: requestId, proximaSlot: slot || "" });
      return tile;
    };
    // A tile keeps the answer that first showed it, so its impression and click agree.
    const render = (answer, source) => {
      const ids = answer.items.map((it) => it.item_id).join("\n");
      if (ids === shown) return;
      shown = ids;
      const old = new Map();
      for (const t of list.querySelectorAll("[data-proxima-item]")) {
        old.set(t.dataset.proximaItem, t);
      }
      const added = [];
      list.replaceChildren(...answer.items.map((it) => {
        if (old.has(it.item_id)) return old.get(it.item_id);
        const tile = makeTile(it, answer.request_id);
        added.push(tile);
        return tile;
      }));
      added.forEach(observe);
      stats.renders++;
      const detail = { answer, source, added: added.map((t) => t.dataset.proximaItem) };
      box.dispatchEvent(new CustomEvent("proxima:render", { bubbles: true, detail }));
    };
    const stop = w.WebSocket ? subscribe((a) => render(a, "stream"), o) : () => {};
    // No first push soon (no WebSocket, a proxy that drops it): ask over HTTP once.
    setTimeout(() => {
      if (shown === null) recommendations(o).then((a) => render(a, "fetch"), () => {});
    }, 3000);
    box.proximaStop = stop;
    return stop;
  }

  d.addEventListener("click", (e) => {
    const tile = e.target.closest && e.target.closest("[data-proxima-item]");
    if (!tile || tile.hasAttribute("data-proxima-ignore")) return;
    const context = clean({ slot: tile.dataset.proximaSlot, page: location.pathname });
    track("click", { ...itemFields(tile), request_id: tile.dataset.proximaRequest, context });
  }, true);
  d.addEventListener("visibilitychange", () => d.visibilityState === "hidden" && beacon());
  w.addEventListener("pagehide", beacon);
  w.addEventListener("online", () => flush());

  function start() {
    if (consented) try {
      const left = JSON.parse(store(PENDING) || "[]");
      store(PENDING, "[]");
      if (left.length) {
        enqueue(left.map((ev) => ({ ev, tries: 0 })));
        schedule(0);
      }
    } catch (e) { /* a damaged leftover is dropped */ }
    d.querySelectorAll("[data-proxima-view]").forEach((el) => track("view", itemFields(el)));
    scan(d);
    d.querySelectorAll("[data-proxima-recommendations]").forEach(mount);
    d.dispatchEvent(new CustomEvent("proxima:ready"));
  }

  w.proxima = {
    version: "1", edge, sessionId: sid, stats,
    track, flush, recommendations, similar, subscribe, mount, observe, scan,
    consent: (yes) => {
      consented = !!yes;
      if (consented) {
        store("proxima_sid", sid);
        d.cookie = "proxima_sid=" + sid + "; path=/; SameSite=Lax";
      } else {
        queue = [];
        store(PENDING, "[]");
      }
    },
    get consented() { return consented; },
    view: (item_id, fields) => track("view", { ...fields, item_id }),
    setUser: (id) => { user = id || ""; },
    setKey: (key) => { siteKey = key || ""; },
    get pending() { return queue.length + inflightCount; },
  };
  if (d.readyState === "loading") d.addEventListener("DOMContentLoaded", start);
  else start();
})();
