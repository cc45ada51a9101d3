// The affectllm page: open a clip, show its player, timeline and evidence, ask about it.
// Plain JavaScript talking to affectllm/ui/server.py; nothing is fetched from anywhere but this server.
"use strict";

const API_HEADERS = { "X-Affectllm-UI": "1" };
const ID = "[AFSL][1-9]\\d{0,2}";
// "[F2, A1]" (brackets and all) or a bare "F2": the citations in an answer's prose.
const CITATION = new RegExp(`\\[(${ID}(?:\\s*[,;/]\\s*${ID})*)\\]|(^|[^A-Za-z0-9])(${ID})(?![A-Za-z0-9])`, "g");

const state = { info: null, clip: null, selected: null, busy: false };
const $ = (id) => document.getElementById(id);

function escapeHtml(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function showError(box, message) {
  box.textContent = message;
  box.hidden = !message;
}

function progressText(data) {
  const seconds = data.elapsed !== undefined ? ` (${Math.round(data.elapsed)} s)` : "";
  return `${data.message || "working"}…${seconds}`;
}

// POST a JSON body and read the server-sent events of the reply; an "error" event becomes an exception.
async function postEvents(url, body, handlers) {
  const response = await fetch(url, {
    method: "POST",
    headers: { ...API_HEADERS, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    const failure = await response.json().catch(() => ({ error: response.statusText }));
    throw new Error(failure.error || response.statusText);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let kind = "message";
        let data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) kind = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        const payload = JSON.parse(data || "{}");
        if (kind === "error") throw new Error(payload.message);
        if (handlers[kind]) handlers[kind](payload);
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

async function uploadFile(file) {
  const limit = state.info ? state.info.max_upload_bytes : Infinity;
  if (file.size > limit) {
    // Checked here too: a refused upload's connection is closed mid-send, which a browser reports vaguely.
    throw new Error(`${file.name}: the file is ${(file.size / 1e6).toFixed(1)} MB; uploads are limited to ` +
      `${(limit / 1e6).toFixed(1)} MB (affectllm ui --max-upload-mb)`);
  }
  const response = await fetch(`/api/files?name=${encodeURIComponent(file.name)}`, {
    method: "POST", headers: API_HEADERS, body: file,
  });
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data.file;
}

// ---------------------------------------------------------------------------------------------- model state
function showModel(model) {
  const pill = $("model-status");
  pill.className = `pill ${model.status}`;
  if (model.status === "ready") pill.textContent = `model: ${model.label || model.backend}`;
  else if (model.status === "failed") pill.textContent = "model: failed to load";
  else pill.textContent = "model: loading…";
  pill.title = model.error || model.name || "";
}

async function refreshInfo() {
  const response = await fetch("/api/info");
  state.info = await response.json();
  showModel(state.info.model);
  if (state.info.model.status === "loading") setTimeout(refreshInfo, 2000);
  return state.info;
}

// ----------------------------------------------------------------------------------------------- the clip
function evidenceIds() {
  return new Set((state.clip ? state.clip.evidence : []).map((e) => e.id));
}

function showClip(clip) {
  state.clip = clip;
  state.selected = null;
  $("clip-view").hidden = false;
  $("clip-name").textContent = clip.clip;
  const player = $("player");
  player.replaceChildren();
  if (clip.media_kind) {
    const media = element(clip.media_kind === "video" ? "video" : "audio");
    media.controls = true;
    media.preload = "metadata";
    media.src = clip.media_url;
    player.append(media);
  }
  $("clip-transcript").textContent = clip.transcript ? `“${clip.transcript}”` : "";
  const warnings = $("clip-warnings");
  warnings.replaceChildren(...clip.warnings.map((w) => element("li", "", `warning: ${w}`)));

  const list = $("evidence");
  list.replaceChildren(...clip.evidence.map((e) => {
    const item = element("li");
    item.dataset.id = e.id;
    item.append(element("span", "cid", e.id), document.createTextNode(e.text));
    return item;
  }));
  $("evidence-panel").hidden = false;
  $("timeline-panel").hidden = false;

  const messages = $("messages");
  messages.replaceChildren(element("p", "hint", `Ask about ${clip.clip}; the first answer analyses the whole clip.`));
  for (const answer of clip.answers) messages.append(answerBubble(answer));
  $("ask-button").disabled = state.busy;
  selectAnswer(clip.answers.length ? clip.answers[clip.answers.length - 1] : null);
}

function showTimeline(url, caption) {
  const image = $("timeline");
  showError($("timeline-error"), "");
  image.hidden = false;
  image.onerror = async () => {
    image.hidden = true;
    const failure = await fetch(url).then((r) => r.json()).catch(() => ({ error: "the timeline could not be drawn" }));
    showError($("timeline-error"), failure.error || "the timeline could not be drawn");
  };
  image.src = url;
  $("timeline-caption").textContent = caption;
}

// Highlight an answer's citations: on the timeline (redrawn for that answer) and in the evidence list.
function selectAnswer(answer) {
  state.selected = answer;
  const cited = new Set(answer ? answer.cited : []);
  for (const item of $("evidence").children) item.classList.toggle("cited", cited.has(item.dataset.id));
  for (const bubble of document.querySelectorAll(".msg.model")) {
    bubble.classList.toggle("selected", answer !== null && bubble.dataset.turn === String(answer.turn));
  }
  const missing = answer ? answer.ungrounded : [];
  showError($("ungrounded"), missing.length ? `Cited but not in the evidence (ungrounded): ${missing.join(", ")}` : "");
  if (answer) showTimeline(answer.timeline_url, `— cues cited by answer ${answer.turn + 1} highlighted`);
  else showTimeline(state.clip.timeline_url, "");
}

// --------------------------------------------------------------------------------------------- the answers
function citedHtml(text, known) {
  const badge = (id) => `<span class="cid${known.has(id) ? "" : " missing"}">${id}</span>`;
  return escapeHtml(text).replace(CITATION, (all, group, before, id) =>
    group ? group.split(/\s*[,;/]\s*/).map(badge).join(" ") : `${before}${badge(id)}`);
}

function fillAnswer(bubble, answer) {
  const known = evidenceIds();
  bubble.dataset.turn = String(answer.turn);
  bubble.replaceChildren();
  if (answer.emotions.length) {
    const chips = element("div", "emotions");
    chips.append(...answer.emotions.map((e) => element("span", "emotion", e)));
    bubble.append(chips);
  }
  const prose = element("p", "prose");
  prose.innerHTML = citedHtml(answer.answer, known);
  bubble.append(prose);
  if (answer.rationale.length) {
    const evidence = new Map((state.clip ? state.clip.evidence : []).map((e) => [e.id, e.text]));
    const list = element("ul", "rationale");
    for (const item of answer.rationale) {
      const li = element("li");
      if (item.cue_id) li.append(element("span", "cid", item.cue_id));
      const where = [item.modality, item.time].filter(Boolean).join(", ");
      li.append(document.createTextNode(item.cue + (where ? ` (${where})` : "")));
      if (item.cue_id && evidence.has(item.cue_id)) li.append(element("div", "quote", `evidence: ${evidence.get(item.cue_id)}`));
      list.append(li);
    }
    bubble.append(list);
  }
  if (answer.structured && !answer.format_ok && answer.problems.length) {
    bubble.append(element("div", "problems", `the reply did not follow the answer format: ${answer.problems.slice(0, 2).join("; ")}`));
  }
  const took = answer.seconds ? ` · ${answer.seconds} s` : "";
  bubble.append(element("div", "meta", `answer ${answer.turn + 1}${took} · click to show its citations on the timeline`));
  bubble.onclick = () => selectAnswer(answer);
}

function answerBubble(answer) {
  const bubble = element("div", "msg model");
  fillAnswer(bubble, answer);
  return bubble;
}

async function ask(question) {
  const clip = state.clip;
  const messages = $("messages");
  messages.append(element("div", "msg user", question || "(analyse the clip)"));
  const bubble = element("div", "msg model");
  const stream = element("pre", "stream");
  bubble.append(stream);
  messages.append(bubble);
  messages.scrollTop = messages.scrollHeight;
  const status = $("ask-status");
  const answer = await postEvents(`/api/clips/${clip.key}/ask`, { question }, {
    progress: (data) => { status.textContent = progressText(data); },
    token: (data) => {
      stream.textContent += data.text;
      stream.scrollTop = stream.scrollHeight;
      status.textContent = progressText({ message: "writing the reply", elapsed: data.elapsed });
    },
    answer: (data) => {
      if (state.clip !== clip) return;
      clip.answers.push(data);
      fillAnswer(bubble, data);
      selectAnswer(data);
      messages.scrollTop = messages.scrollHeight;
    },
  }).catch((error) => {
    bubble.className = "msg error";
    bubble.textContent = error.message;
  });
  status.textContent = "";
  return answer;
}

// ------------------------------------------------------------------------------------------------- forms
async function openClip(event) {
  event.preventDefault();
  if (state.busy) return;
  const errorBox = $("open-error");
  const status = $("open-status");
  showError(errorBox, "");
  const clipFile = $("clip-file").files[0];
  if (!clipFile) {
    showError(errorBox, "Choose a video, audio or transcript file first.");
    return;
  }
  setBusy(true);
  try {
    const tokens = {};
    const files = { clip: clipFile, au_csv: $("au-file").files[0], captions: $("captions-file").files[0],
      transcript: $("transcript-file").files[0] };
    for (const [role, file] of Object.entries(files)) {
      if (!file) continue;
      status.textContent = `uploading ${file.name}…`;
      tokens[role] = await uploadFile(file);
    }
    await postEvents("/api/clips", tokens, {
      progress: (data) => { status.textContent = progressText(data); },
      clip: (data) => showClip(data),
    });
  } catch (error) {
    showError(errorBox, error.message);
  } finally {
    status.textContent = "";
    setBusy(false);
  }
}

async function askQuestion(event) {
  event.preventDefault();
  if (state.busy || !state.clip) return;
  const input = $("question");
  const question = input.value.trim() || input.placeholder;
  input.value = "";
  setBusy(true);
  try {
    await ask(question);
  } finally {
    setBusy(false);
  }
}

function setBusy(busy) {
  state.busy = busy;
  $("open-button").disabled = busy;
  $("ask-button").disabled = busy || !state.clip;
}

$("open-form").addEventListener("submit", openClip);
$("ask-form").addEventListener("submit", askQuestion);
refreshInfo().then((info) => {
  if (info.clips.length) showClip(info.clips[info.clips.length - 1]);
}).catch((error) => showError($("open-error"), `cannot reach the affectllm server: ${error.message}`));
