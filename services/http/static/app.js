// The DCaS web page: sign in with an API key, upload files as jobs, follow them live, download results.
// Plain JS, no dependencies: the page must work offline, from the Manager alone.
"use strict";

const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);
const KEY_ITEM = "dcas-api-key";
const rows = new Map();      // job id (or a temporary upload id) -> <tr>
const following = new Set(); // job ids with an open event stream

const $ = (selector) => document.querySelector(selector);

function apiKey() { return sessionStorage.getItem(KEY_ITEM) || ""; }

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${apiKey()}` };
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response;
}

function formatBytes(n) {
  if (n === null || n === undefined) return "";
  for (const [unit, scale] of [["GB", 1e9], ["MB", 1e6], ["kB", 1e3]]) {
    if (n >= scale) return `${(n / scale).toFixed(1)} ${unit}`;
  }
  return `${n} B`;
}

// --- signing in

async function signIn(key) {
  sessionStorage.setItem(KEY_ITEM, key);
  try {
    await api("/v1/jobs?limit=1");
  } catch (e) {
    sessionStorage.removeItem(KEY_ITEM);
    $("#signin-error").textContent = e.status === 401 ? `Sign-in failed: ${e.message}` : e.message;
    return;
  }
  $("#signin-error").textContent = "";
  $("#signin-panel").hidden = true;
  $("#app").hidden = false;
  $("#signout").hidden = false;
  $("#who").textContent = "signed in";
  await refreshJobs();
}

function signOut() {
  sessionStorage.removeItem(KEY_ITEM);
  location.reload();
}

// --- the job table

function rowFor(id) {
  let row = rows.get(id);
  if (!row) {
    row = document.createElement("tr");
    row.innerHTML = `<td class="name"></td><td class="operation"></td><td class="state"></td>
      <td><progress max="1" value="0"></progress></td><td class="in"></td><td class="out"></td>
      <td class="ratio"></td><td class="actions"></td>`;
    $("#jobs tbody").prepend(row);
    rows.set(id, row);
    $("#empty").hidden = true;
  }
  return row;
}

function showJob(job) {
  const row = rowFor(job.job_id);
  row.dataset.jobId = job.job_id;
  row.dataset.state = job.state;
  row.querySelector(".name").textContent = job.filename;
  row.querySelector(".name").title = job.filename;
  row.querySelector(".operation").textContent = job.operation;
  const state = row.querySelector(".state");
  state.className = `state ${job.state}`;
  state.textContent = job.state;
  if (job.error) {
    const reason = document.createElement("span");
    reason.className = "reason";
    reason.textContent = `${job.error.stage}: ${job.error.type}: ${job.error.message}`;
    state.append(reason);
  }
  const bar = row.querySelector("progress");
  if (job.state === "SUCCEEDED") bar.value = 1;
  else if (TERMINAL.has(job.state)) bar.value = job.chunks_total > 0 ? job.chunks_done / job.chunks_total : 0;
  else if (job.chunks_total > 0) bar.value = job.chunks_done / job.chunks_total;
  else if (job.state === "QUEUED") bar.removeAttribute("value"); // indeterminate: waiting
  bar.dataset.phase = "job";
  row.querySelector(".in").textContent = formatBytes(job.bytes_in || null);
  row.querySelector(".out").textContent = formatBytes(job.bytes_out || null);
  row.querySelector(".ratio").textContent = job.ratio ? job.ratio.toFixed(3) : "";
  const actions = row.querySelector(".actions");
  actions.textContent = "";
  if (job.state === "SUCCEEDED") actions.append(button("Download", "download", () => download(job)));
  actions.append(button(TERMINAL.has(job.state) ? "Delete" : "Cancel", "delete", () => removeJob(job)));
  if (!TERMINAL.has(job.state)) follow(job.job_id);
}

function button(text, className, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.className = className;
  b.addEventListener("click", onClick);
  return b;
}

async function refreshJobs() {
  try {
    const page = await (await api("/v1/jobs?limit=50")).json();
    for (const job of page.jobs.slice().reverse()) showJob(job);
    $("#empty").hidden = rows.size > 0;
  } catch (e) {
    $("#app-error").textContent = e.message;
  }
}

// --- live progress: Server-Sent Events read through fetch (EventSource cannot send the key)

async function follow(jobId) {
  if (following.has(jobId)) return;
  following.add(jobId);
  let lastId = null;
  let done = false;
  try {
    for (let attempt = 0; !done && attempt < 20; attempt++) {
      try {
        const headers = lastId ? { "Last-Event-ID": lastId } : {};
        const response = await api(`/v1/jobs/${jobId}/events`, { headers });
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done: ended } = await reader.read();
          if (ended) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const event = parseEvent(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
            if (!event.data) continue;
            lastId = event.id || lastId;
            const job = JSON.parse(event.data);
            showJob(job);
            if (TERMINAL.has(job.state)) done = true;
          }
        }
        if (!done) done = TERMINAL.has(rows.get(jobId)?.dataset.state);
      } catch (e) {
        if (e.status === 404 || e.status === 401) return;
        await new Promise((resolve) => setTimeout(resolve, 1000)); // then resume after lastId
      }
    }
  } finally {
    following.delete(jobId);
  }
}

function parseEvent(text) {
  const event = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = line.slice(0, colon);
    const value = line.slice(colon + 1).replace(/^ /, "");
    event[field] = field === "data" && event.data ? `${event.data}\n${value}` : value;
  }
  return event;
}

// --- uploads

let uploads = 0;

function upload(file) {
  const operation = file.name.toLowerCase().endsWith(".dcz") ? "decompress" : "compress";
  const tempId = `upload-${++uploads}`;
  const row = rowFor(tempId);
  row.dataset.state = "UPLOADING";
  row.querySelector(".name").textContent = file.name;
  row.querySelector(".operation").textContent = operation;
  row.querySelector(".state").className = "state UPLOADING";
  row.querySelector(".state").textContent = "UPLOADING";
  row.querySelector(".in").textContent = formatBytes(file.size);
  const bar = row.querySelector("progress");
  bar.dataset.phase = "upload";

  // XMLHttpRequest rather than fetch: it reports upload progress, and sends the File as it is read.
  const xhr = new XMLHttpRequest();
  const query = new URLSearchParams({ operation, filename: file.name });
  xhr.open("POST", `/v1/jobs?${query}`);
  xhr.setRequestHeader("Authorization", `Bearer ${apiKey()}`);
  xhr.setRequestHeader("Content-Type", "application/octet-stream");
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = e.loaded / e.total; };
  xhr.onload = () => {
    rows.delete(tempId);
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
    if (xhr.status === 202) {
      rows.set(body.job_id, row);
      showJob({ job_id: body.job_id, state: body.state, filename: file.name, operation,
                chunks_done: 0, chunks_total: 0, bytes_in: file.size });
      follow(body.job_id);
    } else {
      row.querySelector(".state").className = "state FAILED";
      row.querySelector(".state").textContent = `upload refused: ${body.error || xhr.status}`;
    }
  };
  xhr.onerror = () => {
    row.querySelector(".state").className = "state FAILED";
    row.querySelector(".state").textContent = "upload failed: the connection broke";
  };
  xhr.send(file);
}

async function download(job) {
  try {
    const response = await api(`/v1/jobs/${job.job_id}/result`);
    const blob = await response.blob();
    const name = (job.output || "").split("/").pop() || `${job.filename}.out`;
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
  } catch (e) {
    $("#app-error").textContent = `download failed: ${e.message}`;
  }
}

async function removeJob(job) {
  // A running job is cancelled (and stays listed); a finished one is deleted with its files.
  try {
    if (TERMINAL.has(job.state)) {
      await api(`/v1/jobs/${job.job_id}`, { method: "DELETE" });
      rows.get(job.job_id)?.remove();
      rows.delete(job.job_id);
      $("#empty").hidden = rows.size > 0;
    } else {
      const response = await api(`/v1/jobs/${job.job_id}/cancel`, { method: "POST" });
      showJob(await response.json());
    }
  } catch (e) {
    $("#app-error").textContent = e.message;
  }
}

// --- wiring

document.addEventListener("DOMContentLoaded", () => {
  $("#signin-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("#key").value.trim()); });
  $("#signout").addEventListener("click", signOut);
  $("#refresh").addEventListener("click", refreshJobs);
  $("#file").addEventListener("change", (e) => { for (const f of e.target.files) upload(f); e.target.value = ""; });
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    for (const f of e.dataTransfer.files) upload(f);
  });
  if (apiKey()) signIn(apiKey());
});
