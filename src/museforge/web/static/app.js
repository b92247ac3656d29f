// museforge pages: show the chosen model's controls, draw per-bar sliders, follow a job. No build step.
"use strict";

function showModel(form) {
  const chosen = form.querySelector("#model-select").value;
  for (const fs of form.querySelectorAll(".model-controls")) {
    const on = fs.dataset.model === chosen;
    fs.hidden = !on;
    fs.disabled = !on; // hidden models' fields are not sent
  }
}

function label(value) {
  return value < 0 ? "free" : String(value);
}

function drawBarPlan(details) {
  const prefix = details.dataset.prefix;
  const bars = details.closest("fieldset").querySelector('[data-control="bars"]');
  const max = Number(details.dataset.max);
  const box = details.querySelector(".bars");
  const n = Math.min(Number(bars ? bars.value : 8), 64);
  const old = {};
  for (const input of box.querySelectorAll("input")) old[input.name + input.dataset.bar] = input.value;
  box.textContent = "";
  for (let b = 0; b < n; b++) {
    const cell = document.createElement("div");
    cell.className = "bar";
    cell.append(`Bar ${b + 1}`);
    for (const what of ["rhythm", "polyphony"]) {
      const lab = document.createElement("label");
      const out = document.createElement("output");
      const input = document.createElement("input");
      Object.assign(input, { type: "range", min: -1, max, step: 1, name: prefix + what });
      input.dataset.bar = b;
      input.value = old[input.name + b] ?? -1;
      out.textContent = label(Number(input.value));
      input.addEventListener("input", () => (out.textContent = label(Number(input.value))));
      lab.append(what === "rhythm" ? "rhythm " : "polyphony ", out, input);
      cell.append(lab);
    }
    box.append(cell);
  }
}

function initGenerateForm() {
  const form = document.querySelector("#generate-form");
  if (!form) return;
  const select = form.querySelector("#model-select");
  select.addEventListener("change", () => showModel(form));
  showModel(form);
  for (const input of form.querySelectorAll("input[data-output]")) {
    const out = input.closest("label").querySelector("output");
    input.addEventListener("input", () => (out.textContent = input.value));
  }
  for (const details of form.querySelectorAll("details.barplan")) {
    drawBarPlan(details);
    const bars = details.closest("fieldset").querySelector('[data-control="bars"]');
    if (bars) bars.addEventListener("change", () => drawBarPlan(details));
  }
  form.addEventListener("submit", () => {
    const button = form.querySelector("#generate-button");
    button.disabled = true;
    button.textContent = "Starting…";
  });
}

// The keep-going panel: an operation, then a model that does it; only that pair's settings show and are sent.
function initKeepGoing() {
  const form = document.querySelector("#keep-going");
  if (!form) return;
  const select = form.querySelector("#keep-model");
  const button = form.querySelector("#keep-going-button");
  const update = () => {
    const op = form.querySelector('input[name="operation"]:checked');
    for (const option of select.options) {
      const able = option.dataset.ops.split(" ").includes(op.value);
      option.disabled = option.hidden = !able;
    }
    if (select.selectedOptions[0]?.disabled) select.value = [...select.options].find((o) => !o.disabled).value;
    for (const fs of form.querySelectorAll(".op-controls")) {
      const on = fs.dataset.model === select.value && fs.dataset.op === op.value;
      fs.hidden = !on;
      fs.disabled = !on;
    }
    button.textContent = `${op.dataset.label} with ${select.value}`;
  };
  form.addEventListener("change", (e) => {
    if (e.target.name === "operation" || e.target === select) update();
  });
  for (const input of form.querySelectorAll("input[data-output]")) {
    const out = input.closest("label").querySelector("output");
    input.addEventListener("input", () => (out.textContent = input.value));
  }
  form.addEventListener("submit", () => {
    button.disabled = true;
    button.textContent = "Starting…";
  });
  update();
}

// Pick bars on the piano roll: a click picks one bar, a shift-click extends to it. The choice goes into the
// bar field of the panel's shown settings (fill in, re-style) and is shaded on the roll.
function initBarPicking() {
  const svg = document.querySelector(".pianoroll svg");
  const form = document.querySelector("#keep-going");
  if (!svg || !form) return;
  const lines = [...svg.querySelectorAll("line.bar")].map((l) => Number(l.getAttribute("x1")));
  const right = Number(svg.querySelector("g.bars")?.dataset.right ?? svg.viewBox.baseVal.width);
  const shade = document.createElementNS("http://www.w3.org/2000/svg", "rect");
  shade.setAttribute("class", "picked");
  shade.setAttribute("y", svg.querySelector("line.bar")?.getAttribute("y1") ?? "0");
  shade.setAttribute("height", String(svg.querySelector("line.bar")?.getBBox().height ?? 0));
  let anchor = null;
  svg.addEventListener("click", (e) => {
    const input = [...form.querySelectorAll('fieldset:not([disabled]) input[data-bars]')][0];
    if (!input || !lines.length) return;
    const at = new DOMPoint(e.clientX, e.clientY).matrixTransform(svg.getScreenCTM().inverse());
    const bar = Math.max(1, lines.filter((x) => x <= at.x).length);
    const [first, last] = e.shiftKey && anchor ? [Math.min(anchor, bar), Math.max(anchor, bar)] : [bar, bar];
    if (!e.shiftKey || !anchor) anchor = bar;
    input.value = first === last ? `${first}` : `${first}-${last}`;
    const x0 = lines[first - 1];
    const x1 = last < lines.length ? lines[last] : right;
    shade.setAttribute("x", String(x0));
    shade.setAttribute("width", String(Math.max(1, x1 - x0)));
    svg.appendChild(shade);
  });
}

async function followJob() {
  const box = document.querySelector("#job");
  if (!box || !["queued", "running"].includes(box.dataset.status)) return;
  const bar = box.querySelector("#job-progress");
  const status = box.querySelector("#job-status");
  const pause = () => new Promise((r) => setTimeout(r, 1000));
  for (;;) {
    let job;
    try {
      // the server holds the answer until the job changes, so the page hears of the end at once
      const res = await fetch(`/api/v1/jobs/${box.dataset.job}?wait=10`, { credentials: "same-origin" });
      if (!res.ok) {
        await pause();
        continue;
      }
      job = await res.json();
    } catch (e) {
      await pause(); // the server restarting: keep waiting, the job is kept
      continue;
    }
    bar.value = job.progress;
    status.textContent = job.status === "queued" ? "waiting for a free worker…" : `${Math.round(job.progress * 100)} %`;
    if (job.status === "done") {
      location.replace(job.song_ids.length === 1 ? `/songs/${job.song_ids[0]}` : location.href);
      return;
    }
    if (job.status === "failed") {
      box.querySelector("#job-title").textContent = "This song could not be made";
      const err = box.querySelector("#job-error");
      err.textContent = job.error;
      err.hidden = false;
      status.textContent = "failed";
      return;
    }
  }
}

function notePlays() {
  // tell the analytics a song was played (once per page) and played to the end
  const player = document.querySelector("#player");
  const m = player && new URL(player.src, location.href);
  const id = m && m.pathname.match(/^\/api\/v1\/songs\/([^/]+)\//);
  if (!id) return;
  const token = document.querySelector('meta[name="csrf-token"]').content;
  const note = (kind) =>
    fetch("/api/v1/analytics/events", {
      method: "POST", credentials: "same-origin", keepalive: true,
      headers: { "Content-Type": "application/json", "X-CSRF-Token": token },
      body: JSON.stringify({ kind, song_id: id[1], share: m.searchParams.get("share") }),
    }).catch(() => {});
  player.addEventListener("play", () => note("play"), { once: true });
  let ended = false;
  let replayed = false;
  player.addEventListener("ended", () => {
    ended = true;
    note("play_end");
  });
  // what the listener did with the song, for the lab to learn from: played it again, or left it early
  const feedback = (kind) =>
    fetch(`/api/v1/songs/${id[1]}/feedback${m.search}`, {
      method: "POST", credentials: "same-origin", keepalive: true,
      headers: { "Content-Type": "application/json", "X-CSRF-Token": token },
      body: JSON.stringify({ kind }),
    }).catch(() => {});
  player.addEventListener("play", () => {
    if (ended && !replayed) {
      replayed = true;
      feedback("replay");
    }
  });
  window.addEventListener("pagehide", () => {
    const heard = player.played.length > 0;
    if (heard && !ended && player.duration > 0 && player.currentTime < 0.25 * player.duration) {
      feedback("skip");
    }
  }, { once: true });
}

document.addEventListener("DOMContentLoaded", () => {
  initGenerateForm();
  initKeepGoing();
  initBarPicking();
  followJob();
  notePlays();
});
