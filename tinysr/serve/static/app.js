// tinysr serve's page: uploads images to POST /api/upscale one stream each, shows their progress,
// then a before/after slider and a download link. No libraries, nothing fetched from elsewhere.
"use strict";

const RUNNING_AT_ONCE = 2; // uploads in flight; the server queues them and enlarges one at a time
let options = null;
const waiting = [];
let running = 0;

const $ = (sel, root = document) => root.querySelector(sel);

function notice(text) {
  const el = $("#notice");
  el.textContent = text;
  el.hidden = !text;
}

function megabytes(n) {
  return (n / 1e6).toFixed(1) + " MB";
}

async function init() {
  try {
    const resp = await fetch("/api/options");
    options = await resp.json();
  } catch (err) {
    notice("Cannot reach the tinysr server: is `tinysr serve` still running?");
    return;
  }
  const form = $("#choices");
  for (const choice of options.choices) {
    const label = document.createElement("label");
    label.textContent = choice.label + " ";
    const select = document.createElement("select");
    select.name = choice.name;
    for (const v of choice.values) {
      const opt = document.createElement("option");
      opt.value = String(v);
      opt.textContent = choice.name === "scale" ? "x" + v : String(v);
      opt.selected = v === choice.default;
      select.append(opt);
    }
    label.append(select);
    form.append(label);
  }
  form.addEventListener("change", showLimits);
  showLimits();
  document.body.dataset.ready = "1";
}

function showLimits() {
  const pixels = options.max_pixels[chosen().scale];
  const limits = [`Files up to ${megabytes(options.max_upload)}`];
  if (pixels) limits.push(`images up to ${(pixels / 1e6).toFixed(1)} Mpixel`);
  $("#limits").textContent = limits.join(", ") + `; results are ${options.format.toUpperCase()}, ` +
    "byte for byte what tinysr upscale writes.";
}

function chosen() {
  const params = {};
  for (const el of $("#choices").elements) params[el.name] = el.value;
  return params;
}

function addFiles(files) {
  if (!options) return;
  for (const file of files) {
    const card = makeCard(file);
    if (file.size > options.max_upload) {
      fail(card, `${file.name}: the file is ${megabytes(file.size)}, over this server's upload limit of ` +
        `${megabytes(options.max_upload)} (tinysr serve --max-upload)`);
      continue;
    }
    waiting.push(card);
  }
  pump();
}

function pump() {
  while (running < RUNNING_AT_ONCE && waiting.length) {
    const card = waiting.shift();
    running += 1;
    upload(card).finally(() => {
      running -= 1;
      pump();
    });
  }
}

function makeCard(file) {
  const el = $("#card").content.firstElementChild.cloneNode(true);
  const card = { el, file, params: chosen(), ctrl: new AbortController(), urls: [] };
  $(".name", el).textContent = file.name || "pasted image";
  status(card, "waiting");
  $(".cancel", el).addEventListener("click", () => {
    const i = waiting.indexOf(card);
    if (i >= 0) waiting.splice(i, 1);
    card.ctrl.abort();
    fail(card, "cancelled");
  });
  $("#results").prepend(el);
  return card;
}

function status(card, text, fraction) {
  $(".status", card.el).textContent = text;
  const bar = $("progress", card.el);
  if (fraction === undefined) bar.removeAttribute("value");
  else bar.value = fraction;
  card.el.dataset.state = text.split(" ")[0];
}

function fail(card, message) {
  card.el.dataset.state = "error";
  $(".status", card.el).textContent = message === "cancelled" ? "cancelled" : "failed";
  $("progress", card.el).hidden = true;
  $(".cancel", card.el).hidden = true;
  const err = $(".error", card.el);
  err.textContent = message;
  err.hidden = false;
}

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

async function upload(card) {
  if (card.el.dataset.state === "error") return; // cancelled while waiting
  const query = new URLSearchParams({ ...card.params, name: card.file.name || "pasted.png" });
  status(card, "uploading");
  let resp;
  try {
    resp = await fetch("/api/upscale?" + query, {
      method: "POST", body: card.file, signal: card.ctrl.signal,
      headers: { "Content-Type": "application/octet-stream" },
    });
  } catch (err) {
    if (card.ctrl.signal.aborted) return;
    fail(card, "the upload failed: is `tinysr serve` still running?");
    return;
  }
  if (!resp.ok) {
    let message = `the server said ${resp.status}`;
    try { message = (await resp.json()).error; } catch (err) { /* keep the status */ }
    fail(card, message);
    return;
  }
  const reader = resp.body.getReader();
  let buf = new Uint8Array(0);
  let head = null;
  const chunks = [];
  let got = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (head) {
        chunks.push(value);
        got += value.length;
        continue;
      }
      buf = concat(buf, value);
      let nl;
      while (!head && (nl = buf.indexOf(10)) >= 0) {
        const msg = JSON.parse(new TextDecoder().decode(buf.subarray(0, nl)));
        buf = buf.slice(nl + 1);
        if (msg.state === "queued") status(card, `queued (${msg.position} ahead)`);
        else if (msg.state === "running") {
          status(card, `enlarging ${msg.done}/${msg.total} tiles`, msg.total ? msg.done / msg.total : undefined);
        } else if (msg.state === "error") {
          fail(card, msg.message);
          return;
        } else if (msg.state === "done") {
          head = msg;
          chunks.push(buf);
          got = buf.length;
        }
      }
    }
  } catch (err) {
    if (!card.ctrl.signal.aborted) fail(card, "the connection to the server was lost");
    return;
  }
  if (!head || got !== head.size) {
    fail(card, "the connection to the server was lost before the result arrived");
    return;
  }
  show(card, head, new Blob(chunks, { type: "image/png" }));
}

function show(card, head, blob) {
  const el = card.el;
  const before = $(".before", el);
  const after = $(".after", el);
  const beforeUrl = URL.createObjectURL(card.file);
  const afterUrl = URL.createObjectURL(blob);
  before.src = beforeUrl;
  after.src = afterUrl;
  const link = $(".download", el);
  link.href = afterUrl;
  link.download = head.name;
  link.textContent = `Download ${head.name}`;
  $("progress", el).hidden = true;
  $(".cancel", el).hidden = true;
  after.addEventListener("load", () => {
    card.w = after.naturalWidth;
    card.h = after.naturalHeight;
    $(".size", el).textContent = `${card.w}\u00d7${card.h} (${megabytes(blob.size)})`;
    $(".compare", el).hidden = false;
    setZoom(card, false);
    setSlider(card, 50);
    status(card, "done", 1);
  }, { once: true });
  wireCompare(card);
}

function setSlider(card, percent) {
  const el = card.el;
  $(".slider", el).value = percent;
  $(".after", el).style.clipPath = `inset(0 0 0 ${percent}%)`;
  $(".divider", el).style.left = `${percent}%`;
}

function setZoom(card, full) {
  const el = card.el;
  const stage = $(".stage", el);
  const viewport = $(".viewport", el);
  card.full = full;
  $(".fit", el).setAttribute("aria-pressed", String(!full));
  $(".full", el).setAttribute("aria-pressed", String(full));
  viewport.classList.toggle("zoomed", full);
  if (full) {
    // one image pixel per CSS pixel; centre the view
    stage.style.width = `${card.w}px`;
    stage.style.height = `${card.h}px`;
    viewport.scrollLeft = (card.w - viewport.clientWidth) / 2;
    viewport.scrollTop = (card.h - viewport.clientHeight) / 2;
  } else {
    const width = Math.min(card.w, viewport.clientWidth || card.w);
    stage.style.width = `${width}px`;
    stage.style.height = `${(width * card.h) / card.w}px`;
  }
}

function wireCompare(card) {
  const el = card.el;
  const viewport = $(".viewport", el);
  $(".slider", el).addEventListener("input", (ev) => setSlider(card, Number(ev.target.value)));
  $(".fit", el).addEventListener("click", () => setZoom(card, false));
  $(".full", el).addEventListener("click", () => setZoom(card, true));
  const smooth = (on) => {
    $(".before", el).classList.toggle("smooth", on);
    $(".nearest", el).setAttribute("aria-pressed", String(!on));
    $(".smooth", el).setAttribute("aria-pressed", String(on));
  };
  $(".nearest", el).addEventListener("click", () => smooth(false));
  $(".smooth", el).addEventListener("click", () => smooth(true));
  // Fit: dragging moves the divider. 100%: dragging pans, Shift-drag moves the divider.
  let drag = null;
  viewport.addEventListener("pointerdown", (ev) => {
    drag = { x: ev.clientX, y: ev.clientY, left: viewport.scrollLeft, top: viewport.scrollTop,
      divider: !card.full || ev.shiftKey };
    viewport.setPointerCapture(ev.pointerId);
    if (drag.divider) moveDivider(ev);
  });
  const moveDivider = (ev) => {
    const box = $(".stage", el).getBoundingClientRect();
    setSlider(card, Math.max(0, Math.min(100, ((ev.clientX - box.left) / box.width) * 100)));
  };
  viewport.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    if (drag.divider) moveDivider(ev);
    else {
      viewport.scrollLeft = drag.left - (ev.clientX - drag.x);
      viewport.scrollTop = drag.top - (ev.clientY - drag.y);
    }
  });
  const end = () => { drag = null; };
  viewport.addEventListener("pointerup", end);
  viewport.addEventListener("pointercancel", end);
  viewport.addEventListener("dblclick", () => setZoom(card, !card.full));
}

function setup() {
  const drop = $("#drop");
  $("#files").addEventListener("change", (ev) => {
    addFiles(ev.target.files);
    ev.target.value = "";
  });
  for (const type of ["dragenter", "dragover"]) {
    document.addEventListener(type, (ev) => {
      ev.preventDefault();
      drop.classList.add("over");
    });
  }
  document.addEventListener("dragleave", (ev) => {
    if (!ev.relatedTarget) drop.classList.remove("over");
  });
  document.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    addFiles(ev.dataTransfer.files);
  });
  document.addEventListener("paste", (ev) => {
    const files = [...(ev.clipboardData ? ev.clipboardData.files : [])];
    if (files.length) addFiles(files);
  });
  init();
}

setup();
