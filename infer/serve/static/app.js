// unetlite page: plain JavaScript, no build step, no network beyond this server.
// It calls the same API as any client: POST v1/segment (the token, when given, as a Bearer header).
"use strict";

(function () {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  const CAPTIONS = { cutout: "Cutout", mask: "Mask", overlay: "Overlay", background: "New background",
                     prob: "Probability", "side-by-side": "Photo | mask | cutout" };
  const SUFFIX = { cutout: "cutout", mask: "mask", overlay: "overlay", background: "background", prob: "prob",
                   "side-by-side": "side-by-side" };
  const PARALLEL = 2;        // requests this page sends at once
  const BUSY_RETRIES = 4;    // 503 "busy" answers retried (after Retry-After) before giving up

  const state = {
    view: "cutout",
    bg: { mode: "color", color: "#2f6fde", blur: 14 },
    threshold: 0.5,
    modelThreshold: 0.5,
    clean: false,
    tta: false,
    token: "",               // page memory only: never written to storage or the URL
    items: [],
    nextId: 1,
  };
  const queue = [];
  let running = 0;

  // ------------------------------------------------------------------ words for errors

  function megapixels(px) {
    const mp = px / 1e6;
    return (mp >= 10 ? mp.toFixed(0) : mp.toFixed(1)) + " MP";
  }
  function megabytes(n) {
    if (n < 1e6) return Math.max(1, Math.round(n / 1e3)) + " KB";
    if (n >= 1e9) return (n / 1e9).toFixed(1) + " GB";
    const mb = n / 1e6;
    return (mb >= 10 ? mb.toFixed(0) : mb.toFixed(1)) + " MB";
  }

  /** One sentence for an error answer of the API ({"error": ..., "reason": ..., numbers}). */
  function explain(status, body) {
    const info = body && typeof body === "object" ? body : {};
    const text = info.error || (typeof body === "string" ? body : "");
    switch (info.reason) {
      case "too_many_pixels":
        return `too large: ${megapixels(info.pixels)} (${info.width}×${info.height}), the limit is ${megapixels(info.max_pixels)}`;
      case "over_memory_budget":
        return `too large for this server as ${CAPTIONS[info.format] ? CAPTIONS[info.format].toLowerCase() : info.format}: ` +
               `${megapixels(info.pixels)} needs ${megabytes(info.needed_bytes)} of memory, the server allows ` +
               `${megabytes(info.budget_bytes)}; try Mask or a smaller photo`;
      case "body_too_large":
        return info.bytes ? `file too big: ${megabytes(info.bytes)}, the limit is ${megabytes(info.max_bytes)}`
                          : `file too big: the limit is ${megabytes(info.max_bytes)}`;
      case "not_an_image":
        return `not a picture this server can read (${text})`;
      case "token":
        return "this server needs an access token: enter it under Access token, then try again";
      case "busy":
        return "the server is busy: try again in a moment";
      case "memory":
        return "the server is busy with large pictures: try again in a moment";
      case "shutting_down":
        return "the server is shutting down";
    }
    if (status === 401) return "this server needs an access token: enter it under Access token, then try again";
    if (status === 413) return "file too big for this server";
    if (status === 503) return "the server is busy: try again in a moment";
    return text ? text : `the server answered ${status}`;
  }

  // ------------------------------------------------------------------ API

  function authHeaders() {
    return state.token ? { Authorization: "Bearer " + state.token } : {};
  }

  async function readError(response) {
    const type = response.headers.get("content-type") || "";
    try {
      return type.includes("json") ? await response.json() : (await response.text()).trim();
    } catch (_) {
      return null;
    }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function segment(file, fmt, signal) {
    const params = new URLSearchParams({ format: fmt, threshold: String(state.threshold) });
    if (state.clean) params.set("clean", "true");
    if (state.tta) params.set("tta", "true");
    for (let attempt = 0; ; attempt++) {
      let response;
      try {
        response = await fetch("v1/segment?" + params, {
          method: "POST", body: file, signal,
          headers: Object.assign({ "Content-Type": "application/octet-stream" }, authHeaders()),
        });
      } catch (err) {
        if (err.name === "AbortError") throw err;
        throw new Error("cannot reach the server (is it still running?)");
      }
      if (response.ok) {
        return { blob: await response.blob(), ms: Number(response.headers.get("x-unetlite-inference-ms")),
                 provider: response.headers.get("x-unetlite-provider") || "" };
      }
      const body = await readError(response);
      if (response.status === 401) markToken(true);
      const busy = response.status === 503 && !(body && body.reason === "shutting_down");
      if (busy && attempt < BUSY_RETRIES) {
        await sleep(1000 * (Number(response.headers.get("retry-after")) || 1) * (attempt + 1));
        continue;
      }
      const error = new Error(explain(response.status, body));
      error.status = response.status;
      throw error;
    }
  }

  function markToken(on) {
    $("#token").classList.toggle("needs", on);
  }

  // ------------------------------------------------------------------ server line

  async function loadServer() {
    const line = $("#server-line");
    try {
      const health = await fetch("healthz").then((r) => r.json());
      const model = await fetch("v1/model", { headers: authHeaders() });
      if (model.status === 401) {
        line.textContent = `Connected (${health.provider}). This server needs an access token.`;
        markToken(true);
        return;
      }
      const info = await model.json();
      const name = (info.path || "").split(/[\\/]/).pop();
      state.modelThreshold = Number(info.threshold);
      if (!state.thresholdTouched) setThreshold(state.modelThreshold);
      const c = info.contract || {};
      line.textContent = `Model ${name}${c.input_width ? ` (${c.input_width}×${c.input_height})` : ""} on ` +
                         `${info.provider}; threshold ${state.modelThreshold}.`;
      line.classList.remove("bad");
      markToken(false);
    } catch (err) {
      line.textContent = "Cannot reach the server.";
      line.classList.add("bad");
    }
  }

  // ------------------------------------------------------------------ items

  function resultKey(fmt) {
    return [fmt, state.threshold, state.clean, state.tta].join("|");
  }

  function addFiles(files) {
    const list = Array.from(files || []);
    if (!list.length) return;
    for (const file of list) {
      const item = { id: state.nextId++, file, name: file.name || "pasted image", results: new Map(),
                     composites: new Map(), width: 0, height: 0 };
      item.el = buildCard(item);
      $("#cards").prepend(item.el);
      state.items.unshift(item);
      show(item);
    }
    refreshChrome();
  }

  function buildCard(item) {
    const el = $("#card-template").content.firstElementChild.cloneNode(true);
    el.dataset.id = item.id;
    $(".card-name", el).textContent = item.name;
    $(".card-name", el).title = item.name;
    const original = $(".original", el);
    item.originalUrl = URL.createObjectURL(item.file);
    original.addEventListener("load", () => {
      item.width = original.naturalWidth;
      item.height = original.naturalHeight;
      updateMeta(item);
    });
    original.addEventListener("error", () => updateMeta(item));
    original.src = item.originalUrl;
    $(".card-remove", el).addEventListener("click", () => removeItem(item));
    return el;
  }

  function removeItem(item) {
    if (item.controller) item.controller.abort();
    const at = state.items.indexOf(item);
    if (at >= 0) state.items.splice(at, 1);
    item.el.remove();
    URL.revokeObjectURL(item.originalUrl);
    for (const r of item.results.values()) URL.revokeObjectURL(r.url);
    for (const url of item.composites.values()) URL.revokeObjectURL(url);
    refreshChrome();
  }

  function updateMeta(item, extra) {
    const parts = [];
    if (item.width) parts.push(`${item.width}×${item.height}`);
    parts.push(megabytes(item.file.size));
    if (extra) parts.push(extra);
    else if (item.lastMs) parts.push(`${item.lastMs.toFixed(0)} ms`);
    $(".card-meta", item.el).textContent = parts.join(" · ");
  }

  function setState(item, value, message) {
    item.el.dataset.state = value;
    const box = $(".card-error", item.el);
    box.hidden = value !== "error";
    box.textContent = value === "error" ? message : "";
    refreshChrome();
  }

  function serverFormat(view) {
    return view === "background" ? "cutout" : view;
  }

  /** Show the current view for an item: from its cache, or ask the server (queued). */
  function show(item) {
    const view = state.view;
    const fmt = serverFormat(view);
    $(".result-caption", item.el).textContent = CAPTIONS[view];
    const cached = item.results.get(resultKey(fmt));
    if (cached) {
      present(item, view, cached);
      return;
    }
    setState(item, "working");
    if (!queue.includes(item)) queue.push(item);
    pump();
  }

  function pump() {
    while (running < PARALLEL && queue.length) {
      const item = queue.shift();
      if (!state.items.includes(item)) continue;
      running++;
      fetchResult(item).finally(() => { running--; pump(); });
    }
  }

  async function fetchResult(item) {
    const view = state.view;
    const fmt = serverFormat(view);
    const key = resultKey(fmt);
    if (item.results.has(key)) { present(item, view, item.results.get(key)); return; }
    item.controller = new AbortController();
    try {
      const answer = await segment(item.file, fmt, item.controller.signal);
      const result = { blob: answer.blob, url: URL.createObjectURL(answer.blob), ms: answer.ms, fmt };
      item.results.set(key, result);
      item.lastMs = answer.ms;
      markToken(false);
      if (state.view === view && resultKey(serverFormat(state.view)) === key) present(item, view, result);
      else show(item);  // the settings changed while this ran
    } catch (err) {
      if (err.name === "AbortError") return;
      setState(item, "error", err.message);
      updateMeta(item, "failed");
      const img = $(".result", item.el);
      img.removeAttribute("src");
      setDownload(item, null);
    } finally {
      item.controller = null;
    }
  }

  async function present(item, view, result) {
    let url = result.url;
    let name = downloadName(item, view, result.blob.type);
    if (view === "background") {
      try {
        const composed = await compose(item, result);
        url = composed.url;
        name = downloadName(item, view, composed.type);
      } catch (err) {
        setState(item, "error", "could not draw the new background in this browser: " + err.message);
        return;
      }
      if (state.view !== view) return;
    }
    const img = $(".result", item.el);
    img.onload = () => {
      img.dataset.width = img.naturalWidth;
      img.dataset.height = img.naturalHeight;
      setState(item, "done");
      updateMeta(item);
    };
    img.onerror = () => setState(item, "error", "the answer is not a picture this browser can show");
    img.src = url;
    setDownload(item, url, name);
  }

  function setDownload(item, url, name) {
    const link = $(".card-download", item.el);
    if (url) {
      link.href = url;
      link.download = name;
      link.setAttribute("aria-disabled", "false");
    } else {
      link.removeAttribute("href");
      link.setAttribute("aria-disabled", "true");
    }
  }

  function downloadName(item, view, type) {
    const stem = item.name.replace(/\.[^.]+$/, "") || "image";
    const ext = /jpeg/.test(type) ? ".jpg" : ".png";
    return `${stem}_${SUFFIX[view]}${ext}`;
  }

  // ------------------------------------------------------------------ background compositing (in the page)

  function loadImage(url) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("cannot read the picture"));
      img.src = url;
    });
  }

  async function compose(item, cutout) {
    const key = [cutout.url, state.bg.mode, state.bg.mode === "blur" ? state.bg.blur : state.bg.color].join("|");
    if (item.composites.has(key)) return item.composites.get(key);
    const front = await loadImage(cutout.url);
    const w = front.naturalWidth, h = front.naturalHeight;
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext("2d");
    let type = "image/png";
    if (state.bg.mode === "blur") {
      const photo = await loadImage(item.originalUrl);
      const radius = Math.max(1, Math.round(state.bg.blur * Math.max(w, h) / 1000));
      if ("filter" in ctx) {
        ctx.filter = `blur(${radius}px)`;
        const m = radius * 2;  // draw past the edges so the blur does not fade them
        ctx.drawImage(photo, -m, -m, w + 2 * m, h + 2 * m);
        ctx.filter = "none";
      } else {  // no canvas filters: blur by scaling down and up
        const small = document.createElement("canvas");
        small.width = Math.max(1, Math.round(w / radius));
        small.height = Math.max(1, Math.round(h / radius));
        small.getContext("2d").drawImage(photo, 0, 0, small.width, small.height);
        ctx.imageSmoothingQuality = "high";
        ctx.drawImage(small, 0, 0, w, h);
      }
      type = "image/jpeg";
    } else {
      ctx.fillStyle = state.bg.color;
      ctx.fillRect(0, 0, w, h);
    }
    ctx.drawImage(front, 0, 0);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, type, 0.92));
    if (!blob) throw new Error("canvas export failed");
    const made = { url: URL.createObjectURL(blob), type };
    item.composites.set(key, made);
    return made;
  }

  // ------------------------------------------------------------------ controls

  function refreshAll() {
    for (const item of state.items) show(item);
  }

  function refreshChrome() {
    const n = state.items.length;
    $("#empty").hidden = n > 0;
    $("#toolbar").hidden = n === 0;
    const done = state.items.filter((i) => i.el.dataset.state === "done").length;
    const failed = state.items.filter((i) => i.el.dataset.state === "error").length;
    const working = n - done - failed;
    const parts = [`${n} photo${n === 1 ? "" : "s"}`];
    if (working) parts.push(`${working} working`);
    if (failed) parts.push(`${failed} failed`);
    $("#summary").textContent = parts.join(" · ");
  }

  function setThreshold(value) {
    state.threshold = Math.round(value * 100) / 100;
    $("#threshold").value = String(state.threshold);
    $("#threshold-out").textContent = state.threshold.toFixed(2);
  }

  function radio(group, attr, onPick) {
    for (const button of $$(`[${attr}]`, group)) {
      button.addEventListener("click", () => {
        for (const other of $$(`[${attr}]`, group)) other.setAttribute("aria-checked", String(other === button));
        onPick(button.getAttribute(attr));
      });
    }
  }

  function wire() {
    const input = $("#files");
    input.addEventListener("change", () => { addFiles(input.files); input.value = ""; });
    const drop = $("#drop");
    drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
    for (const target of [drop, document.body]) {
      target.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
      target.addEventListener("dragleave", (e) => { if (e.target === drop) drop.classList.remove("over"); });
      target.addEventListener("drop", (e) => {
        e.preventDefault();
        drop.classList.remove("over");
        addFiles(e.dataTransfer && e.dataTransfer.files);
      });
    }
    document.addEventListener("paste", (e) => {
      const files = Array.from((e.clipboardData && e.clipboardData.files) || []).filter((f) => f.type.startsWith("image/"));
      if (files.length) addFiles(files);
    });

    radio($("#views"), "data-view", (view) => {
      state.view = view;
      $("#bg-options").hidden = view !== "background";
      refreshAll();
    });
    radio($("#bg-options"), "data-bg", (mode) => {
      state.bg.mode = mode;
      $("#bg-color-row").hidden = mode !== "color";
      $("#bg-blur-row").hidden = mode !== "blur";
      refreshAll();
    });
    $("#bg-color").addEventListener("input", (e) => { state.bg.color = e.target.value; });
    $("#bg-color").addEventListener("change", refreshAll);
    $("#bg-blur").addEventListener("input", (e) => {
      state.bg.blur = Number(e.target.value);
      $("#bg-blur-out").textContent = `${state.bg.blur} px`;
    });
    $("#bg-blur").addEventListener("change", refreshAll);

    const slider = $("#threshold");
    slider.addEventListener("input", () => { $("#threshold-out").textContent = Number(slider.value).toFixed(2); });
    slider.addEventListener("change", () => { state.thresholdTouched = true; setThreshold(Number(slider.value)); refreshAll(); });
    $("#threshold-reset").addEventListener("click", () => {
      state.thresholdTouched = false;
      setThreshold(state.modelThreshold);
      refreshAll();
    });
    $("#clean").addEventListener("change", (e) => { state.clean = e.target.checked; refreshAll(); });
    $("#tta").addEventListener("change", (e) => { state.tta = e.target.checked; refreshAll(); });

    const token = $("#token");
    token.addEventListener("change", () => {
      state.token = token.value.trim();
      loadServer();
      for (const item of state.items) if (item.el.dataset.state === "error") show(item);
    });

    $("#clear").addEventListener("click", () => { for (const item of state.items.slice()) removeItem(item); });
    $("#download-all").addEventListener("click", async () => {
      for (const link of $$(".card-download[href]")) { link.click(); await sleep(250); }
    });
  }

  wire();
  setThreshold(state.threshold);
  refreshChrome();
  loadServer();
  window.unetlitePage = { state, addFiles };  // for tests and the curious
})();
