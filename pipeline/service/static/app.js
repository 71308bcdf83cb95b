// vitmae serve's page, its views: search by image or by path, the anomaly ranking, near-duplicate groups (client.js
// talks to the service). The state lives in the URL (?view=..&path=..&k=..&by=..&page=..&limit=..), so a link shows
// what its sender saw; an uploaded query image is the one thing a link cannot carry. (&heat=1: loss heatmaps.)
"use strict";

const HEALTH_SECONDS = 15;  // how often the bar refreshes what the service serves
const DEFAULTS = {search: {k: "10"}, anomalies: {by: "auto", page: "1", limit: "24", heat: ""}, duplicates: {page: "1", limit: "10"}};

// ---- The URL is the state ----

const shown = {search: null, anomalies: null, duplicates: null};  // what each view shows now, by its URL key
const lastParams = {};  // each view's last parameters, so a tab returns to them

function currentParams() {
  return new URLSearchParams(location.search);
}

function go(state, replace = false) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(state)) if (value !== undefined && value !== null && value !== "") params.set(key, value);
  const url = `?${params}`;
  if (replace) history.replaceState(null, "", url); else history.pushState(null, "", url);
  render();
}

function render() {
  const params = currentParams();
  const view = ["search", "anomalies", "duplicates"].includes(params.get("view")) ? params.get("view") : "search";
  lastParams[view] = Object.fromEntries(params);
  for (const tab of document.querySelectorAll(".tabs a")) tab.classList.toggle("active", tab.dataset.view === view);
  for (const section of document.querySelectorAll(".view")) section.hidden = section.dataset.view !== view;
  document.title = `vitmae · ${view}`;
  ({search: renderSearch, anomalies: renderAnomalies, duplicates: renderDuplicates})[view](params);
}

// ---- Search ----

let upload = null;  // the last uploaded query image (a File): searched again when k changes

function renderSearch(params) {
  const k = params.get("k") || DEFAULTS.search.k;
  $("k").value = k;
  const path = params.get("path");
  const key = path ? `path:${path}:${k}` : (upload ? `upload:${upload.name}:${upload.size}:${k}` : "none");
  if (shown.search === key) return;
  shown.search = key;
  if (path) {
    $("path-input").value = path;
    searchByPath(path, k);
  } else if (upload) {
    searchByUpload(upload, k);
  } else {
    clear($("search-grid"));
    $("query-image").hidden = true;
    setStatus("search-status", "Drop an image, choose a file, or give the path of an image of the run.");
  }
}

function showPreview(src) {
  const preview = $("query-image");
  if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
  preview.onload = () => { preview.hidden = false; };
  preview.src = src;
}

async function searchByPath(path, k) {
  setStatus("search-status", `Searching for the nearest of <b>${escapeHtml(basename(path))}</b>…`, "busy");
  try {
    const response = await api(`/api/image?size=${THUMB_PX}&path=${encodeURIComponent(path)}`);
    if (response.ok) showPreview(URL.createObjectURL(await response.blob()));
  } catch (error) { /* the search below says what is wrong */ }
  const started = performance.now();
  try {
    const body = await apiJson(`/api/search?k=${k}&path=${encodeURIComponent(path)}`);
    showHits(body, path, performance.now() - started);
  } catch (error) {
    clear($("search-grid"));
    setStatus("search-status", escapeHtml(error.message), "error");
  }
}

async function searchByUpload(file, k) {
  upload = file;
  showPreview(URL.createObjectURL(file));
  $("path-input").value = "";
  setStatus("search-status", `Embedding <b>${escapeHtml(file.name || "the image")}</b> and searching…`, "busy");
  const started = performance.now();
  try {
    const body = await apiJson(`/api/search?k=${k}`, {method: "POST", body: file,
                                                        headers: {"Content-Type": file.type || "application/octet-stream"}});
    showHits(body, null, performance.now() - started, file.name);
  } catch (error) {
    clear($("search-grid"));
    setStatus("search-status", escapeHtml(error.message), "error");
  }
}

function showHits(body, queryPath, ms, uploadName) {
  const grid = $("search-grid");
  clear(grid);
  const cosine = body.metric === "cosine";
  for (const hit of body.results) {
    grid.append(card(hit.path, {
      badge: `#${hit.rank}`,
      lines: [[cosine ? "similarity" : "L2 distance", fixed(hit.score)]],
      bar: cosine ? hit.score : null,
      isQuery: queryPath !== null && hit.path === body.query,
    }));
  }
  const what = queryPath ? escapeHtml(basename(body.query || queryPath)) : escapeHtml(uploadName || "the uploaded image");
  setStatus("search-status", `<b>${body.results.length}</b> nearest of <b>${what}</b> · ${Math.round(ms)} ms · `
    + `${cosine ? "cosine similarity" : "L2 distance"} · table version ${body.table_version}`);
}

function startUpload(file) {
  if (!file) return;
  upload = file;
  go({view: "search", k: $("k").value});
}

function setUpSearch() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => { startUpload(event.target.files[0]); event.target.value = ""; });
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("file").click(); }
  });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) drop.addEventListener(name, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => { event.preventDefault(); startUpload(event.dataTransfer.files[0]); });
  // A file dropped anywhere else must not make the browser leave the page to show it.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    if (!$("view-search").hidden && event.dataTransfer.files.length) startUpload(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (file) startUpload(file);
  });
  $("path-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const path = $("path-input").value.trim();
    if (path) { upload = null; go({view: "search", path, k: $("k").value}); }
  });
  $("k").addEventListener("change", () => {
    const params = currentParams();
    go({view: "search", path: params.get("path"), k: $("k").value});
  });
}

// ---- Pagers ----

function drawPagers(view, page, pages, total, noun) {
  for (const pager of document.querySelectorAll(`.pager[data-for="${view}"]`)) {
    const previous = el("button", "plain", "‹ Previous");
    const next = el("button", "plain", "Next ›");
    previous.dataset.action = "previous";
    next.dataset.action = "next";
    previous.disabled = page <= 1;
    next.disabled = page >= pages;
    previous.onclick = () => go({...lastParams[view], view, page: page - 1});
    next.onclick = () => go({...lastParams[view], view, page: page + 1});
    const where = el("span", "", total ? `page ${page} of ${pages} · ${total} ${noun}` : `no ${noun}`);
    pager.replaceChildren(previous, where, next);
  }
}

function pageParams(params, view) {
  const defaults = DEFAULTS[view];
  const limit = Math.max(1, parseInt(params.get("limit") || defaults.limit, 10) || Number(defaults.limit));
  const page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
  return {limit, page, offset: (page - 1) * limit};
}

// ---- Anomalies ----

const BY_NAMES = {both: "loss and kNN distance", loss: "reconstruction loss", knn: "kNN distance"};

async function renderAnomalies(params) {
  const by = params.get("by") || DEFAULTS.anomalies.by;
  const {limit, page, offset} = pageParams(params, "anomalies");
  const heat = params.get("heat") === "1";
  $("by").value = by;
  $("anomalies-limit").value = String(limit);
  $("heatmaps").checked = heat;
  const key = `${by}:${offset}:${limit}:${heat}`;
  if (shown.anomalies === key) return;
  shown.anomalies = key;
  const grid = $("anomalies-grid");
  setStatus("anomalies-status", "Ranking…", "busy");
  try {
    const body = await apiJson(`/api/anomalies?by=${by}&offset=${offset}&limit=${limit}`);
    if (shown.anomalies !== key) return;
    clear(grid);
    for (const row of body.results) {
      grid.append(card(row.path, {
        badge: row.rank === null ? "–" : `#${row.rank}`,
        lines: [["loss", fixed(row.loss, 5)], ["kNN distance", fixed(row.knn_distance)]],
        heatmap: heat,
      }));
    }
    const pages = Math.max(1, Math.ceil(body.total / limit));
    drawPagers("anomalies", page, pages, body.total, "images");
    const auto = by === "auto" ? " (auto)" : "";
    setStatus("anomalies-status", `Most anomalous first, by <b>${BY_NAMES[body.by]}</b>${auto} · `
      + `images ${body.total ? offset + 1 : 0}–${offset + body.results.length} of ${body.total} · table version ${body.table_version}`);
  } catch (error) {
    clear(grid);
    drawPagers("anomalies", 1, 1, 0, "images");
    setStatus("anomalies-status", escapeHtml(error.message), "error");
    shown.anomalies = null;
  }
}

function setUpAnomalies() {
  const choices = () => ({view: "anomalies", by: $("by").value, limit: $("anomalies-limit").value,
    heat: $("heatmaps").checked ? "1" : ""});
  $("by").addEventListener("change", () => go({...choices(), page: 1}));
  $("anomalies-limit").addEventListener("change", () => go({...choices(), page: 1}));
  $("heatmaps").addEventListener("change", () => go({...choices(), page: currentParams().get("page") || 1}));
}

// ---- Duplicates ----

async function renderDuplicates(params) {
  const {limit, page, offset} = pageParams(params, "duplicates");
  $("duplicates-limit").value = String(limit);
  const key = `${offset}:${limit}`;
  if (shown.duplicates === key) return;
  shown.duplicates = key;
  const list = $("duplicates-list");
  setStatus("duplicates-status", "Loading the groups…", "busy");
  try {
    const body = await apiJson(`/api/duplicates?offset=${offset}&limit=${limit}`);
    clear(list);
    for (const group of body.results) {
      const box = el("section", "group");
      const title = el("h3", "", `Group ${group.group}`);
      title.append(el("span", "label", `${group.size} images`));
      const grid = el("div", "grid");
      for (const member of group.members) {
        const representative = member.path === group.representative;
        grid.append(card(member.path, {
          badge: representative ? "representative" : null,
          lines: [["similarity", fixed(member.similarity)]],
          bar: member.similarity,
        }));
      }
      box.append(title, grid);
      list.append(box);
    }
    drawPagers("duplicates", page, Math.max(1, Math.ceil(body.total / limit)), body.total, "groups");
    const stale = body.current ? "" : ` · found at table version ${body.table_version}, older than the one served`;
    setStatus("duplicates-status", `Largest groups first · groups ${body.total ? offset + 1 : 0}–${offset + body.results.length}`
      + ` of ${body.total}${stale}`);
  } catch (error) {
    clear(list);
    drawPagers("duplicates", 1, 1, 0, "groups");
    shown.duplicates = null;
    if (error.status === 404) {
      setStatus("duplicates-status", "");
      const empty = el("div", "empty");
      empty.innerHTML = `No near-duplicate groups yet.<br><small>${escapeHtml(error.message)}</small>`;
      list.append(empty);
    } else {
      setStatus("duplicates-status", escapeHtml(error.message), "error");
    }
  }
}

function setUpDuplicates() {
  $("duplicates-limit").addEventListener("change", () => go({view: "duplicates", limit: $("duplicates-limit").value, page: 1}));
}

// ---- The bar: what the service serves ----

let servedVersion = null;

async function refreshHealth() {
  try {
    const health = await apiJson("/api/health");
    const recall = health.index.recall === null ? "" : ` · recall@${health.index.recall_k} ${health.index.recall.toFixed(3)}`;
    $("run-info").innerHTML = `<b>${escapeHtml(basename(health.run))}</b> · ${health.count.toLocaleString()} images · `
      + `version ${health.table_version} · ${escapeHtml(health.index.type)} ${escapeHtml(health.index.metric)}${recall}`;
    $("run-info").title = health.run;
    $("heatmaps-toggle").hidden = !health.heatmaps;
    if (servedVersion !== null && servedVersion !== health.table_version) {
      for (const view of Object.keys(shown)) shown[view] = null;  // a new version: show it
      render();
    }
    servedVersion = health.table_version;
  } catch (error) {
    $("run-info").textContent = error.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-dialog").addEventListener("cancel", (event) => event.preventDefault());  // the page cannot work without it
  for (const link of document.querySelectorAll("a[data-view]")) {
    link.addEventListener("click", (event) => {
      event.preventDefault();
      const view = link.dataset.view;
      go(lastParams[view] || {view, ...DEFAULTS[view]});
    });
  }
  setUpSearch();
  setUpAnomalies();
  setUpDuplicates();
  window.addEventListener("popstate", render);
  render();
  refreshHealth();
  setInterval(refreshHealth, HEALTH_SECONDS * 1000);
});
