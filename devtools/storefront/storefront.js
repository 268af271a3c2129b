/* The demo storefront: a catalog grid, a live "recommended for you" strip, a product view. */
(() => {
  "use strict";
  const $ = (selector, root) => (root || document).querySelector(selector);
  const strip = $("#for-you");
  const attributes = new Map(); // item id -> {category, price}
  const NAMES = ["Aurora", "Nimbus", "Harbor", "Summit", "Juniper", "Cobalt", "Meadow", "Ember",
    "Atlas", "Willow", "Quartz", "Saffron", "Drift", "Lumen", "Tundra", "Orchid"];
  const LINES = ["Classic", "Pro", "Mini", "Plus", "Edition", "Lite", "Max", "Select"];
  let proxima = null, renders = 0, liveUpdates = 0, openItem = null;

  const hash = (text) => {
    let h = 2166136261;
    for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619);
    return h >>> 0;
  };
  const nameOf = (id) =>
    `${NAMES[hash(id) % NAMES.length]} ${LINES[(hash(id) >>> 8) % LINES.length]}`;
  const label = (category) => (category || "general").replace(/-/g, " ");
  const money = (price) => (price == null ? "" : `$${price.toFixed(2)}`);

  async function loadAttributes(ids) {
    const missing = ids.filter((id) => !attributes.has(id));
    if (!missing.length) return;
    const res = await fetch(`/demo/items.json?ids=${encodeURIComponent(missing.join(","))}`);
    if (!res.ok) return;
    for (const item of (await res.json()).items) attributes.set(item.item_id, item);
  }

  function paint(tile, id) {
    const item = attributes.get(id) || {};
    tile.style.setProperty("--hue", String(hash(id) % 360));
    $(".glyph", tile).textContent = label(item.category).charAt(0).toUpperCase();
    $(".name", tile).textContent = nameOf(id);
    const sku = $(".sku", tile);
    if (sku) sku.textContent = id;
    $(".category", tile).textContent = label(item.category);
    $(".price", tile).textContent = money(item.price);
    if (item.category) tile.dataset.proximaCategory = item.category;
    if (item.price != null) tile.dataset.proximaPrice = String(item.price);
  }

  // The catalog: what a session the edge has never seen is offered, i.e. popularity.
  async function loadCatalog() {
    const cold = `catalog-${proxima.sessionId.slice(-12)}-${Date.now()}`;
    const res = await fetch(`/v1/recommendations?session_id=${cold}&k=12&slot=catalog`);
    const answer = await res.json();
    const ids = answer.items.map((it) => it.item_id);
    await loadAttributes(ids);
    const grid = $("#catalog");
    const template = $("template", strip).content.firstElementChild;
    grid.replaceChildren(...ids.map((id) => {
      const tile = template.cloneNode(true);
      tile.dataset.proximaItem = id;
      tile.dataset.proximaSlot = "catalog";
      paint(tile, id);
      return tile;
    }));
  }

  strip.addEventListener("proxima:render", async (event) => {
    const { answer, source, added } = event.detail;
    await loadAttributes(added);
    for (const tile of strip.querySelectorAll("[data-proxima-item]")) {
      paint(tile, tile.dataset.proximaItem);
      const offer = (answer.offers || []).find((o) => o.item === tile.dataset.proximaItem);
      const badge = $(".badge", tile);
      badge.hidden = !offer;
      badge.textContent = offer ? `-${offer.percent || ""}% ${offer.code || ""}`.trim() : "";
    }
    renders += 1;
    if (source === "stream" && renders > 1) {
      liveUpdates += 1;
      strip.classList.remove("updated");
      void strip.offsetWidth; // restart the highlight animation
      strip.classList.add("updated");
    }
    strip.dataset.liveUpdates = String(liveUpdates);
    $("#live-updates").textContent = String(liveUpdates);
    const precision = answer.precision ? ` · ${answer.precision}` : "";
    $("#model-version").textContent = `v${answer.model_version}${precision}`;
    $("#for-you-note").textContent = answer.cold
      ? "Popular right now. Look at a few products and this row follows you."
      : `Picked for this session from what you viewed · ${answer.request_id}`;
  });

  function show(id) {
    openItem = id;
    const panel = $("#detail");
    paint($(".detail-card", panel), id);
    $("#cart-note").textContent = "";
    panel.hidden = false;
    const item = attributes.get(id) || {};
    proxima.view(id, { category: item.category, price: item.price });
  }

  document.addEventListener("click", (event) => {
    const tile = event.target.closest("[data-proxima-item]");
    if (tile) show(tile.dataset.proximaItem);
  });
  document.addEventListener("keydown", (event) => {
    const tile = event.target.closest && event.target.closest("[data-proxima-item]");
    if (tile && event.key === "Enter") tile.click();
    if (event.key === "Escape") $("#detail").hidden = true;
  });
  $("#detail-close").addEventListener("click", () => { $("#detail").hidden = true; });
  $("#add-to-cart").addEventListener("click", () => {
    if (!openItem) return;
    const item = attributes.get(openItem) || {};
    proxima.track("add_to_cart", { item_id: openItem, category: item.category, price: item.price });
    $("#cart-note").textContent = "Added to your cart.";
  });

  // This file runs before the snippet, so no render is missed; the rest waits for it.
  document.addEventListener("proxima:ready", () => {
    proxima = window.proxima;
    $("#session-id").textContent = proxima.sessionId.slice(0, 10);
    setInterval(() => { $("#events-accepted").textContent = String(proxima.stats.accepted); }, 500);
    loadCatalog().catch((error) => {
      $("#catalog").textContent = `Could not load the catalog: ${error}`;
    });
  });
})();
