// vitmae serve's page, its client side: the API with the token, thumbnails, and the cards that show results.
"use strict";

const TOKEN_KEY = "vitmae.token";
const THUMB_PX = 256;       // thumbnails asked of the service (cards show them at up to ~200 CSS pixels)
const THUMB_PARALLEL = 6;   // thumbnail requests in flight at once

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function basename(path) {
  const trimmed = path.replace(/\/+$/, "");
  return trimmed.slice(trimmed.lastIndexOf("/") + 1) || path;
}

function fixed(value, digits = 4) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function setStatus(id, html, kind = "") {
  const status = $(id);
  status.className = `status ${kind}`.trim();
  status.innerHTML = html;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

// ---- The API, with the token when the service asks for one ----

let tokenPrompt = null;

function askToken(reason) {
  if (!tokenPrompt) {
    tokenPrompt = new Promise((resolve) => {
      const dialog = $("token-dialog");
      $("token-reason").textContent = reason;
      $("token-input").value = "";
      $("token-form").onsubmit = () => {
        localStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
        tokenPrompt = null;
        resolve();
      };
      dialog.showModal();
    });
  }
  return tokenPrompt;
}

async function api(url, init = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = new Headers(init.headers || {});
    const token = localStorage.getItem(TOKEN_KEY);
    if (token) headers.set("Authorization", `Bearer ${token}`);
    const response = await fetch(url, {...init, headers});
    if (response.status !== 401 || attempt >= 5) return response;
    await askToken(token
      ? "That token was not accepted. Enter the token the service was started with (--token)."
      : "Enter the token the service was started with (--token). It is kept in this browser.");
  }
}

async function apiJson(url, init) {
  const response = await api(url, init);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.error || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

// ---- Thumbnails: fetched (with the token) when they come near the screen, a few at a time ----

const thumbQueue = [];
let thumbsInFlight = 0;
const observer = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (entry.isIntersecting) {
      observer.unobserve(entry.target);
      thumbQueue.push(entry.target);
    }
  }
  pumpThumbs();
}, {rootMargin: "600px"});

function pumpThumbs() {
  while (thumbsInFlight < THUMB_PARALLEL && thumbQueue.length) {
    const img = thumbQueue.shift();
    if (!img.isConnected) continue;
    thumbsInFlight++;
    loadThumb(img).finally(() => { thumbsInFlight--; pumpThumbs(); });
  }
}

async function loadThumb(img) {
  try {
    const heat = img.dataset.heatmap ? "&heatmap=true" : "";
    const response = await api(`/api/image?size=${THUMB_PX}&path=${encodeURIComponent(img.dataset.path)}${heat}`);
    if (!response.ok) throw new Error((await response.json().catch(() => ({}))).error || response.statusText);
    const url = URL.createObjectURL(await response.blob());
    const owner = img.closest("[data-blobs]");
    if (owner) owner.blobs = [...(owner.blobs || []), url];
    img.onload = () => img.classList.add("loaded");
    img.src = url;
  } catch (error) {
    const missing = el("span", "missing", "no preview");
    missing.title = error.message;
    img.replaceWith(missing);
  }
}

// heatmap: the image's per-patch loss drawn over it (runs that kept it).
function thumbnail(path, heatmap = false) {
  const img = el("img");
  img.alt = basename(path);
  img.dataset.path = path;
  if (heatmap) img.dataset.heatmap = "1";
  observer.observe(img);
  return img;
}

function clear(container) {
  for (const url of container.blobs || []) URL.revokeObjectURL(url);
  container.blobs = [];
  container.dataset.blobs = "";
  container.replaceChildren();
}

// One result: the picture, a badge, lines of scores, the file's name; a click searches by it.
function card(path, {badge, lines = [], bar = null, isQuery = false, heatmap = false}) {
  const figure = el("figure", isQuery ? "card query-card" : "card");
  figure.tabIndex = 0;
  figure.title = `${path}\nclick to search by this image`;
  figure.dataset.path = path;
  const picture = el("div", "thumb");
  picture.append(thumbnail(path, heatmap));
  if (badge) picture.append(el("span", "badge", badge));
  const caption = el("figcaption");
  for (const [label, value] of lines) {
    const row = el("div", "scores");
    row.append(el("span", "", value), el("span", "label", label));
    caption.append(row);
  }
  if (bar !== null) {
    const track = el("div", "scorebar");
    const fill = el("i");
    fill.style.width = `${Math.max(0, Math.min(1, bar)) * 100}%`;
    track.append(fill);
    caption.append(track);
  }
  caption.append(el("div", "name", basename(path)));
  figure.append(picture, caption);
  const open = () => go({view: "search", path, k: currentParams().get("k") || DEFAULTS.search.k});
  figure.addEventListener("click", open);
  figure.addEventListener("keydown", (event) => { if (event.key === "Enter") open(); });
  return figure;
}
