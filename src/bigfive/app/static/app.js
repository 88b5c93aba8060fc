// The bigfive page: upload (or pick) a clip, follow its progress, show traits, quality and the figure.
"use strict";
const $ = (id) => document.getElementById(id);
const STEPS = ["faces", "flow", "model", "figure"];
let info = null;
let current = null;  // the job being followed, for the cancel button

function show(id, on) { $(id).hidden = !on; }

function showError(message) {
  $("error").textContent = message;
  show("error", true);
  show("progress-box", false);
  setBusy(false);
}

function setBusy(busy) {
  for (const id of ["upload-btn", "sample-btn"]) $(id).disabled = busy;
}

function progress(value, text) {
  show("progress-box", true);
  if (value === null) $("progress").removeAttribute("value"); else $("progress").value = value;
  $("status").textContent = text;
}

async function init() {
  const response = await fetch("/api/info");
  info = await response.json();
  $("model").textContent = info.model;
  $("note").textContent = info.note;
  $("limit").textContent = `up to ${(info.max_upload_bytes / 1e6).toFixed(1)} MB`;
  $("privacy").textContent = "What this server keeps: your clip only until its prediction is done, failed or " +
    "cancelled (then it is deleted); the result (traits, quality, figure) for " +
    `${Math.round(info.result_ttl_s / 60)} minutes after it is done. Everything is deleted when the server stops. ` +
    `A prediction running longer than ${info.job_timeout_s} s is stopped.`;
  show("card-link", info.model_card);
  for (const id of info.samples) $("sample").add(new Option(id, id));
  if (!info.samples.length) show("sample-form", false);
}

function start() {
  show("error", false);
  show("result", false);
  setBusy(true);
}

function upload(event) {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) { showError("choose a video file first"); return; }
  start();
  if (file.size > info.max_upload_bytes) {  // the server refuses it too; this saves sending it
    const mb = (info.max_upload_bytes / 1e6).toFixed(1);
    showError(`${file.name}: the file is larger than the upload limit of ${mb} MB (bigfive app --max-upload-mb)`);
    return;
  }
  const xhr = new XMLHttpRequest();
  xhr.open("POST", `/api/upload?name=${encodeURIComponent(file.name)}`);
  xhr.setRequestHeader("Content-Type", "application/octet-stream");
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) progress(e.loaded / e.total, "uploading"); };
  xhr.onload = () => accepted(xhr.status, xhr.responseText);
  xhr.onerror = () => showError(`${file.name}: the upload failed (is the server still running?)`);
  progress(0, "uploading");
  xhr.send(file);
}

async function pickSample(event) {
  event.preventDefault();
  start();
  const response = await fetch(`/api/sample/${encodeURIComponent($("sample").value)}`, { method: "POST" });
  accepted(response.status, await response.text());
}

function accepted(status, text) {
  let body;
  try { body = JSON.parse(text); } catch { body = { error: `the server answered ${status}` }; }
  if (status !== 202) { showError(body.error || `the server answered ${status}`); return; }
  current = body.job;
  poll(body.job);
}

async function cancel() {
  if (current) await fetch(`/api/jobs/${current}/cancel`, { method: "POST" });
}

async function poll(id) {
  const response = await fetch(`/api/jobs/${id}`);
  const job = await response.json();
  if (!response.ok) { showError(job.error); return; }
  if (job.stage !== "done") {
    const step = STEPS.indexOf(job.stage);
    const text = step < 0 ? `${job.stage_text} (${job.waiting || 0} ahead)` : `step ${step + 1} of 4: ${job.stage_text}`;
    progress(step < 0 ? null : (step + 0.5) / STEPS.length, text);
    setTimeout(() => poll(id), 400);
    return;
  }
  if (job.status !== "ok") { showError(job.error); return; }
  render(job);
}

function render(job) {
  $("clip-name").textContent = job.name;
  const dist = info.distribution;
  $("traits").replaceChildren(...job.traits.map((t) => traitRow(t, dist && dist.traits[t.name])));
  $("legend").textContent = dist
    ? `Blue bar: predicted score (0-1). Grey bands: the middle 90% and 50% of the training labels, dark tick: their ` +
      `median (${dist.clips} training clips, ${dist.source}).`
    : "Blue bar: predicted score (0-1). The training labels were not found, so their distribution is not shown.";
  $("quality").textContent = `detection rate ${job.quality.detection_rate}, mean confidence ` +
    `${job.quality.mean_confidence} (flagged below ${info.quality_floor.detection_rate.toFixed(2)} / ` +
    `${info.quality_floor.mean_confidence.toFixed(3)}, from the training data)`;
  $("warning").textContent = job.warning ? `WARNING: ${job.warning}: the scores are less reliable` : "";
  show("warning", Boolean(job.warning));
  $("notes").textContent = job.notes ? `notes: ${job.notes}` : "";
  show("notes", Boolean(job.notes));
  if (job.figure) $("figure").src = job.figure;
  show("figure", Boolean(job.figure));
  show("progress-box", false);
  show("result", true);
  setBusy(false);
}

function traitRow(trait, d) {
  const row = document.createElement("div");
  row.className = "trait";
  const name = document.createElement("span");
  name.textContent = trait.name;
  const track = document.createElement("div");
  track.className = "track";
  const pct = (x) => `${(100 * Math.min(Math.max(x, 0), 1)).toFixed(2)}%`;
  const part = (cls, left, width) => {
    const el = document.createElement("div");
    el.className = cls;
    el.style.left = pct(left);
    if (width !== undefined) el.style.width = pct(width);
    track.append(el);
  };
  if (d) {
    part("band90", d.p5, d.p95 - d.p5);
    part("band50", d.p25, d.p75 - d.p25);
    part("median", d.p50);
  }
  part("bar", 0, trait.value);
  part("marker", trait.value);
  const value = document.createElement("span");
  value.className = "trait-value";
  value.dataset.trait = trait.name;
  value.textContent = trait.text;
  row.append(name, track, value);
  return row;
}

$("upload-form").addEventListener("submit", upload);
$("sample-form").addEventListener("submit", pickSample);
$("cancel-btn").addEventListener("click", cancel);
init().catch((err) => showError(`cannot reach the server: ${err}`));
