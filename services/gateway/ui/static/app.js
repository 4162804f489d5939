// capsearch web UI: progressive enhancement of server-rendered pages (no framework, no build).
// - the relevance slider shows its value
// - "More results" appends the next page in place instead of navigating
// - drag-and-drop upload: one request per file, so each has its own progress bar and status
// With keys on, the browser's session cookie (from /sign-in, HttpOnly) authenticates every
// request this script makes: no key is ever held in script-readable storage.
"use strict";

(function () {
  const UPLOAD_CONCURRENCY = 3;
  const POLL_MS = 1000;
  const POLL_LIMIT_MS = 15 * 60 * 1000;

  function announce(el, text) {
    if (el) el.textContent = text;
  }

  // A drop zone shows it is a target while a file is dragged over it (upload and photo search).
  function highlightOnDrag(zone) {
    ["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (e) => {
      e.preventDefault();
      zone.classList.add("over");
    }));
    ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, () => {
      zone.classList.remove("over");
    }));
  }

  // ---- search page ---------------------------------------------------------------------------

  function enhanceThreshold() {
    const range = document.getElementById("min_score");
    const out = document.getElementById("min_score_out");
    if (!range || !out) return;
    const show = () => { out.textContent = Number(range.value).toFixed(2); };
    range.addEventListener("input", show);
    show();
  }

  function enhanceMore() {
    document.addEventListener("click", async (event) => {
      const link = event.target.closest && event.target.closest("#more");
      if (!link) return;
      event.preventDefault();
      link.setAttribute("aria-busy", "true");
      link.textContent = "Loading…";
      try {
        const resp = await fetch(link.dataset.fragment);
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
        const grid = document.getElementById("results");
        const fresh = Array.from(doc.querySelectorAll("#results > li"));
        fresh.forEach((li) => grid.appendChild(document.adoptNode(li)));
        const pager = document.getElementById("pager");
        const nextPager = doc.getElementById("pager");
        if (nextPager) pager.replaceWith(document.adoptNode(nextPager));
        else pager.remove();
        const total = grid.children.length;
        announce(document.getElementById("results-status"),
          `${fresh.length} more loaded, ${total} shown${nextPager ? ", more below" : ""}.`);
        // keyboard users continue where the new results start
        const first = fresh.length && fresh[0].querySelector("a");
        if (first) first.focus();
      } catch (err) {
        link.removeAttribute("aria-busy");
        link.textContent = "More results";
        window.location.href = link.href; // fall back to the plain next-page link
      }
    });
  }

  // ---- upload page -------------------------------------------------------------------------

  function uploadItem(list, file) {
    const li = document.createElement("li");
    li.className = "upload";
    li.dataset.state = "queued";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = file.name;
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", "Upload of " + file.name);
    const status = document.createElement("span");
    status.className = "status";
    status.textContent = "waiting";
    li.append(name, bar, status);
    list.appendChild(li);
    return { li, bar, status };
  }

  function setState(item, state, text) {
    item.li.dataset.state = state;
    item.status.textContent = text;
  }

  function send(file, source, item) {
    return new Promise((resolve, reject) => {
      const form = new FormData();
      form.append("files", file, file.name);
      if (source) form.append("source", source);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/v1/images");
      xhr.responseType = "json";
      xhr.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable) item.bar.value = Math.round((100 * e.loaded) / e.total);
      });
      xhr.addEventListener("load", () => {
        const body = xhr.response || {};
        if (xhr.status === 202 && body.images && body.images.length) resolve(body.images[0]);
        else reject(new Error((body.error && body.error.message) || "HTTP " + xhr.status));
      });
      xhr.addEventListener("error", () => reject(new Error("network error")));
      setState(item, "uploading", "uploading");
      xhr.send(form);
    });
  }

  async function follow(id, item) {
    const started = Date.now();
    while (Date.now() - started < POLL_LIMIT_MS) {
      const resp = await fetch("/v1/images/" + id);
      if (resp.ok) {
        const image = await resp.json();
        if (image.status === "indexed" || image.status === "failed") return image;
        setState(item, image.status, image.status === "pending" ? "captioning" : image.status);
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
    throw new Error("still not indexed; check later");
  }

  function finish(item, image) {
    if (image.status === "indexed") {
      const link = document.createElement("a");
      link.href = "/images/" + image.id;
      link.textContent = image.caption || "view";
      setState(item, "indexed", "indexed: ");
      item.status.appendChild(link);
    } else {
      setState(item, "failed", "failed: " + (image.error || "unknown reason"));
    }
  }

  async function uploadOne(file, source, item, maxBytes) {
    try {
      if (maxBytes && file.size > maxBytes) throw new Error("larger than the upload limit");
      const accepted = await send(file, source, item);
      item.bar.value = 100;
      setState(item, accepted.status, accepted.duplicate ? "already in the collection"
        : "captioning");
      finish(item, await follow(accepted.id, item));
    } catch (err) {
      setState(item, "failed", "failed: " + err.message);
    }
  }

  function enhanceUpload() {
    const form = document.getElementById("upload-form");
    if (!form) return;
    const input = document.getElementById("files");
    const zone = document.getElementById("dropzone");
    const list = document.getElementById("upload-list");
    const status = document.getElementById("upload-status");
    const maxBytes = Number(form.dataset.maxBytes || 0);
    let running = 0;
    let done = 0;
    let total = 0;
    const queue = [];

    function summary() {
      const failed = list.querySelectorAll('[data-state="failed"]').length;
      announce(status, `${done} of ${total} photos done` +
        (failed ? `, ${failed} failed.` : ".") + (running ? " Working…" : ""));
    }

    function pump() {
      while (running < UPLOAD_CONCURRENCY && queue.length) {
        const job = queue.shift();
        running += 1;
        uploadOne(job.file, job.source, job.item, maxBytes).finally(() => {
          running -= 1;
          done += 1;
          summary();
          pump();
        });
      }
    }

    function add(files) {
      const source = document.getElementById("upload-source").value.trim();
      Array.from(files).forEach((file) => {
        queue.push({ file, source, item: uploadItem(list, file) });
        total += 1;
      });
      summary();
      pump();
    }

    form.addEventListener("submit", (e) => { e.preventDefault(); add(input.files); });
    input.addEventListener("change", () => { add(input.files); input.value = ""; });
    highlightOnDrag(zone);
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      if (e.dataTransfer && e.dataTransfer.files.length) add(e.dataTransfer.files);
    });
  }

  // ---- search by photo: a photo dropped on the box is sent as if chosen ----------------------
  function enhancePhotoSearch() {
    const form = document.getElementById("photo-search");
    const zone = document.getElementById("photo-drop");
    const input = document.getElementById("photo");
    if (!form || !zone || !input) return;
    highlightOnDrag(zone);
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      if (!e.dataTransfer || !e.dataTransfer.files.length) return;
      input.files = e.dataTransfer.files;
      form.requestSubmit();
    });
    input.addEventListener("change", () => { if (input.files.length) form.requestSubmit(); });
  }

  document.addEventListener("DOMContentLoaded", () => {
    enhanceThreshold();
    enhanceMore();
    enhanceUpload();
    enhancePhotoSearch();
  });
})();
