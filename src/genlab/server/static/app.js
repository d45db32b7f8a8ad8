// genlab's web page: pick a model, see its card, generate text (streamed) or images. Plain JS, no build step;
// everything goes through the same /v1 API that other clients use.
"use strict";

const $ = (id) => document.getElementById(id);
let current = null;          // the selected model's card
let allModels = [];          // every model's card, as GET /v1/models gave them
let streamAbort = null;      // aborts the running text stream
const objectUrls = {};       // blob URLs per <img>/<a>, revoked when replaced

function headers(extra = {}) {
  const token = $("token").value.trim();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

function status(message, isError = false) {
  $("status").textContent = message;
  $("status").className = isError ? "error" : "muted";
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const body = await response.json();
      detail = typeof body.detail === "string" ? body.detail
        : body.detail.map((e) => `${e.loc.slice(1).join(".")}: ${e.msg}`).join("; ");
    } catch (_) { /* not JSON: keep the status text */ }
    if (response.status === 401) $("token-box").open = true;
    throw new Error(`${response.status}: ${detail}`);
  }
  return response;
}

function setBlob(imgId, linkId, blob) {
  for (const id of [imgId, linkId]) if (objectUrls[id]) URL.revokeObjectURL(objectUrls[id]);
  const url = URL.createObjectURL(blob);
  objectUrls[imgId] = objectUrls[linkId] = url;
  $(imgId).src = url;
  $(linkId).href = url;
  $(linkId).hidden = false;
}

// --- the model list and the card ---

async function loadModels() {
  try {
    const { models } = await (await api("/v1/models")).json();
    const list = $("models");
    list.replaceChildren();
    if (!models.length) list.innerHTML = '<li class="muted">no run directories here yet</li>';
    for (const model of models) {
      const item = document.createElement("li");
      item.className = "model-item";
      item.dataset.name = model.name;
      item.innerHTML = `<span class="name"></span><span class="family"></span>`;
      item.querySelector(".name").textContent = model.name;
      item.querySelector(".family").textContent = model.error ? "unusable" : `${model.family} · ${model.task}`;
      item.addEventListener("click", () => select(model));
      list.append(item);
    }
    allModels = models;
    selectFromHash();
    status(`${models.length} model${models.length === 1 ? "" : "s"}`);
  } catch (e) {
    status(`could not list the models: ${e.message}`, true);
  }
}

// The URL's #fragment names the selected model, so a link (or the back button) opens its card.
function selectFromHash() {
  const wanted = decodeURIComponent(location.hash.slice(1));
  const model = allModels.find((m) => m.name === wanted);
  if (model && model !== current) select(model);
}

function rows(table, entries) {
  table.replaceChildren();
  for (const [key, value] of entries) {
    const tr = table.insertRow();
    tr.insertCell().textContent = key;
    tr.insertCell().textContent = value;
  }
}

function formatValue(v) {
  if (typeof v === "number") return Number.isInteger(v) ? v.toLocaleString() : v.toPrecision(4);
  if (Array.isArray(v)) return v.join(", ");
  return String(v);
}

// The figures a card shows first; the rest of eval.json is one click away.
const HEADLINE = new Set(["perplexity", "cross_entropy_nats", "bits_per_char", "oov", "fd", "kid", "precision",
  "recall", "vlb_bits_per_dim", "iwae_bits_per_dim", "neg_elbo_bits_per_dim", "label_accuracy",
  "captions.clip_score", "captions.r_precision"]);

// Scalar metrics, one level of nesting flattened ("captions.clip_score"); long lists left out.
function metricEntries(metrics) {
  const out = [];
  for (const [k, v] of Object.entries(metrics || {})) {
    if (typeof v === "number") out.push([k, formatValue(v)]);
    else if (v && typeof v === "object" && !Array.isArray(v)) {
      for (const [k2, v2] of Object.entries(v)) if (typeof v2 === "number") out.push([`${k}.${k2}`, formatValue(v2)]);
    } else if (typeof v === "string" && v.length < 60 && k !== "model") out.push([k, v]);
  }
  return out;
}

async function select(model) {
  current = model;
  location.hash = encodeURIComponent(model.name);
  for (const item of document.querySelectorAll(".model-item")) {
    item.classList.toggle("selected", item.dataset.name === model.name);
  }
  $("empty").hidden = true;
  $("card").hidden = false;
  $("card-name").textContent = model.name;
  if (model.error) {
    $("card-about").textContent = model.error;
    $("text-form").hidden = $("image-form").hidden = true;
    return;
  }
  $("card-about").textContent = model.about;
  const facts = [["family", model.family], ["data", model.data ?? "—"], ["conditioning", model.conditioning]];
  $("card-facts").replaceChildren(...facts.flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    return [dt, dd];
  }));
  const metrics = metricEntries(model.metrics);
  const headline = metrics.filter(([k]) => HEADLINE.has(k));
  rows($("card-metrics"), headline.length ? headline : metrics.length ? metrics.slice(0, 8)
    : [["—", "not evaluated yet"]]);
  rows($("card-all-metrics"), metrics);
  $("all-metrics").hidden = metrics.length <= headline.length;
  rows($("card-options"), Object.entries(model.options || {}).map(([k, v]) =>
    [k, typeof v === "object" && v !== null && !Array.isArray(v) ? JSON.stringify(v) : formatValue(v)]));
  $("card-sample").hidden = true;
  if (model.sample_grid) {
    try {
      const blob = await (await api(`/v1/samples/${model.name}`)).blob();
      if (current === model) {
        $("card-sample-img").src = URL.createObjectURL(blob);
        $("card-sample").hidden = false;
      }
    } catch (_) { /* no grid after all */ }
  }
  const isText = model.capabilities.includes("text.generate");
  $("text-form").hidden = !isText;
  $("image-form").hidden = isText;
  if (isText) setupText(model); else setupImages(model);
}

// --- text ---

function setupText(model) {
  for (const el of document.querySelectorAll(".neural-only")) el.hidden = model.task === "ngram";
  $("text-output").textContent = "";
  $("text-info").textContent = "";
  $("text-download").hidden = true;
  $("score-table").replaceChildren();
}

function textRequest() {
  const body = {
    model: current.name,
    prompt: $("text-prompt").value,
    max_new_tokens: Number($("max-new-tokens").value) || 200,
    temperature: Number($("temperature").value),
  };
  if ($("top-k").value) body.top_k = Number($("top-k").value);
  if (current.task !== "ngram" && Number($("top-p").value) < 1) body.top_p = Number($("top-p").value);
  if ($("text-seed").value !== "") body.seed = Number($("text-seed").value);
  return body;
}

// POST with stream: true and read the server-sent events as they arrive (EventSource only does GET).
async function generateText(event) {
  event.preventDefault();
  const body = { ...textRequest(), stream: true };
  const output = $("text-output");
  output.textContent = body.prompt;
  $("text-generate").disabled = true;
  $("text-stop").disabled = false;
  $("text-download").hidden = true;
  streamAbort = new AbortController();
  const started = performance.now();
  let firstPiece = null;
  try {
    const response = await api("/v1/text/generate", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      signal: streamAbort.signal,
    });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const kind = (block.match(/^event: (.*)$/m) || [null, "message"])[1];
        const data = JSON.parse((block.match(/^data: (.*)$/m) || [null, "{}"])[1]);
        if (kind === "message") {
          firstPiece ??= performance.now();
          output.textContent += data.text;
        } else if (kind === "done") {
          $("text-info").textContent = `${data.pieces} pieces in ${data.seconds} s` +
            ` · first piece after ${Math.round(firstPiece ? firstPiece - started : 0)} ms` +
            (data.finish_reason === "time" ? " · stopped at the server's time limit" : "");
        } else if (kind === "error") {
          throw new Error(data.detail);
        }
      }
    }
    status("done");
  } catch (e) {
    if (e.name === "AbortError") status("stopped"); else status(e.message, true);
  } finally {
    $("text-generate").disabled = false;
    $("text-stop").disabled = true;
    const link = $("text-download");
    if (objectUrls["text-download"]) URL.revokeObjectURL(objectUrls["text-download"]);
    objectUrls["text-download"] = link.href = URL.createObjectURL(new Blob([output.textContent]));
    link.hidden = !output.textContent;
  }
}

async function scoreText() {
  try {
    const response = await api("/v1/text/score", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: current.name, text: $("score-text").value }),
    });
    const { sentences, total } = await response.json();
    const table = $("score-table");
    rows(table, [...sentences.map((s) => [s.text, `log p ${s.logprob.toFixed(2)} · ${s.tokens} tokens · ` +
      `perplexity ${s.perplexity.toFixed(2)}`]), ["all", `perplexity ${total.perplexity.toFixed(2)}`]]);
    const head = table.createTHead().insertRow();
    head.insertCell().textContent = "text";
    head.insertCell().textContent = "score (natural log)";
    status("scored");
  } catch (e) {
    status(e.message, true);
  }
}

// --- images ---

function setupImages(model) {
  const text = model.conditioning === "text";
  $("prompt-row").hidden = !text;
  const chips = $("example-prompts");
  chips.replaceChildren();
  for (const prompt of [...new Set(model.example_prompts || [])]) {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.textContent = prompt;
    chip.addEventListener("click", () => { $("image-prompt").value = prompt; });
    chips.append(chip);
  }
  $("label-row").hidden = model.conditioning !== "class";
  const select = $("image-label");
  select.replaceChildren(new Option("every class", ""));
  for (const name of model.class_names || []) select.append(new Option(name, name));
  const diffusion = model.sampling_options.length > 0;
  for (const el of document.querySelectorAll(".diffusion-only")) el.hidden = !diffusion;
  for (const el of document.querySelectorAll(".guided-only")) el.hidden = model.conditioning === "none";
  $("edit-panel").hidden = !model.capabilities.includes("images.edit");
  if (model.options.guidance !== undefined) {
    $("guidance").value = model.options.guidance;
    $("guidance-value").textContent = model.options.guidance;
  }
  $("image-result").hidden = $("edit-result").hidden = true;
  $("image-download").hidden = $("edit-download").hidden = true;
}

function samplingFields(target) {
  if (!current.sampling_options.length) return target;
  const set = (k, v) => { if (target instanceof FormData) target.append(k, v); else target[k] = v; };
  if ($("sampler").value) set("sampler", $("sampler").value);
  if ($("steps").value) set("steps", Number($("steps").value));
  if (current.conditioning !== "none") set("guidance", Number($("guidance").value));
  return target;
}

async function generateImages(event) {
  event.preventDefault();
  const body = samplingFields({ model: current.name, num_images: Number($("num-images").value) || 8 });
  if (current.conditioning === "text") body.prompt = $("image-prompt").value;
  if (current.conditioning === "class" && $("image-label").value) body.label = $("image-label").value;
  if ($("image-seed").value !== "") body.seed = Number($("image-seed").value);
  $("image-generate").disabled = true;
  status("generating…");
  const started = performance.now();
  try {
    const response = await api("/v1/images/generate", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    setBlob("image-output", "image-download", await response.blob());
    $("image-result").hidden = false;
    status(`generated in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  } catch (e) {
    status(e.message, true);
  } finally {
    $("image-generate").disabled = false;
  }
}

async function editImage() {
  const file = $("edit-image").files[0];
  if (!file) { status("choose an image to edit first", true); return; }
  const form = samplingFields(new FormData());
  form.append("model", current.name);
  form.append("image", file);
  if ($("edit-mask").files[0]) form.append("mask", $("edit-mask").files[0]);
  form.append("strength", $("strength").value);
  form.append("num_images", Math.min(Number($("num-images").value) || 4, 8));
  if ($("image-seed").value !== "") form.append("seed", $("image-seed").value);
  $("edit-button").disabled = true;
  status("editing…");
  try {
    const response = await api("/v1/images/edit", { method: "POST", body: form });
    setBlob("edit-output", "edit-download", await response.blob());
    $("edit-result").hidden = false;
    status("edited");
  } catch (e) {
    status(e.message, true);
  } finally {
    $("edit-button").disabled = false;
  }
}

// --- wiring ---

for (const id of ["temperature", "top-p", "guidance", "strength"]) {
  $(id).addEventListener("input", () => { $(`${id}-value`).textContent = $(id).value; });
}
$("token").value = localStorage.getItem("genlab-token") || "";
$("token").addEventListener("change", () => { localStorage.setItem("genlab-token", $("token").value.trim()); loadModels(); });
$("text-form").addEventListener("submit", generateText);
$("text-stop").addEventListener("click", () => streamAbort && streamAbort.abort());
$("score-button").addEventListener("click", scoreText);
$("image-form").addEventListener("submit", generateImages);
$("edit-button").addEventListener("click", editImage);
window.addEventListener("hashchange", selectFromHash);
loadModels();
