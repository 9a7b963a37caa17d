// spkd dashboard, the job page's transcript: the player follows the sentences, a click
// corrects a sentence in place (saved through POST /jobs/<id>/segments/<number>, every
// output made again on the server), the versions panel refreshes, and find highlights
// matches in this transcript. Text is only ever read and set as text (textContent),
// never as markup; the versions panel comes from the server already escaped.
"use strict";

(function () {
  const view = document.getElementById("transcript");
  const sentences = Array.from(document.querySelectorAll("#transcript .sent[data-start]"));
  if (!view || !sentences.length) return;
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const player = document.getElementById("player");
  const blocks = Array.from(document.querySelectorAll("#timeline rect.seg[data-index]"));
  const byIndex = new Map(sentences.map((s, i) => [s.dataset.index, i]));
  const starts = sentences.map((s) => parseFloat(s.dataset.start));

  // --- the player ------------------------------------------------------------------------
  let current = -1;
  function mark(index) {
    if (index === current) return;
    if (current >= 0) {
      sentences[current].classList.remove("current");
      blocks.filter((b) => b.dataset.index === sentences[current].dataset.index)
        .forEach((b) => b.classList.remove("active"));
    }
    current = index;
    if (index >= 0) {
      sentences[index].classList.add("current");
      blocks.filter((b) => b.dataset.index === sentences[index].dataset.index)
        .forEach((b) => b.classList.add("active"));
    }
  }
  function at(time) {
    // the last sentence that started at or before `time`, while it lasts
    let lo = 0, hi = starts.length - 1, found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (starts[mid] <= time + 1e-3) { found = mid; lo = mid + 1; } else { hi = mid - 1; }
    }
    if (found >= 0 && time > parseFloat(sentences[found].dataset.end) + 0.05) return -1;
    return found;
  }
  function playFrom(index) {
    mark(index);
    if (!player) return;
    player.currentTime = starts[index];
    const playing = player.play();
    if (playing && playing.catch) playing.catch(() => {});
  }
  // A block of the timeline or a turn's time: play from there, no jump of the page.
  document.querySelectorAll("#timeline a[data-index], #transcript a.time[data-index]").forEach((link) => {
    link.addEventListener("click", (e) => {
      e.preventDefault();
      const i = byIndex.get(link.dataset.index);
      if (i === undefined) return;
      playFrom(i);
      sentences[i].scrollIntoView({ block: "nearest" });
      history.replaceState(null, "", "#t=" + sentences[i].dataset.start);
    });
  });
  if (player) player.addEventListener("timeupdate", () => mark(at(player.currentTime)));
  const hash = /^#t=([0-9.]+)$/.exec(window.location.hash);
  if (hash) {
    const time = parseFloat(hash[1]);
    const index = at(time) >= 0 ? at(time) : Math.max(0, starts.findIndex((s) => s >= time));
    mark(index);
    if (player) player.currentTime = time;
    sentences[index].scrollIntoView({ block: "center" });
  }

  // --- correcting a sentence in place ---------------------------------------------------------
  const editUrl = view.dataset.editUrl;  // absent where the job cannot be corrected
  let editing = null;  // {el, before, bar, status}

  function clean(text) { return text.replace(/\s+/g, " ").trim(); }
  function changed() { return editing && clean(editing.el.textContent) !== clean(editing.before); }

  function caretAt(x, y) {
    const range = document.caretRangeFromPoint ? document.caretRangeFromPoint(x, y) : null;
    const position = !range && document.caretPositionFromPoint ? document.caretPositionFromPoint(x, y) : null;
    const selection = window.getSelection();
    if (!selection) return;
    if (range) { selection.removeAllRanges(); selection.addRange(range); return; }
    if (position) {
      const r = document.createRange();
      r.setStart(position.offsetNode, position.offset);
      r.collapse(true);
      selection.removeAllRanges();
      selection.addRange(r);
    }
  }

  function close(keepText) {
    if (!editing) return;
    const { el, before, bar } = editing;
    if (!keepText) el.textContent = before;
    el.removeAttribute("contenteditable");
    el.classList.remove("editing");
    bar.remove();
    editing = null;
  }

  function open(el, event) {
    if (!editUrl || !el.dataset.number) return;
    if (editing && editing.el === el) return;
    if (editing) {
      if (changed()) {
        editing.status.textContent = "not saved yet: Save or Cancel first";
        editing.el.focus();
        return;
      }
      close(false);
    }
    const bar = document.createElement("span");
    bar.className = "edit-bar";
    const save = document.createElement("button");
    save.type = "button";
    save.className = "save";
    save.textContent = "Save";
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "cancel";
    cancel.textContent = "Cancel";
    const status = document.createElement("span");
    status.className = "edit-status";
    status.setAttribute("aria-live", "polite");
    bar.append(save, cancel, status);
    save.addEventListener("click", () => submit());
    cancel.addEventListener("click", () => close(false));
    try {
      el.contentEditable = "plaintext-only";
    } catch (e) {
      el.contentEditable = "true";  // a browser without plaintext-only: only the text is read
    }
    el.classList.add("editing");
    el.after(bar);
    editing = { el, before: el.textContent, bar, status };
    el.focus();
    if (event) caretAt(event.clientX, event.clientY);
  }

  async function submit() {
    if (!editing) return;
    const edit = editing;
    const text = clean(edit.el.textContent);
    if (!changed()) { close(false); return; }
    if (!text) { edit.status.textContent = "a sentence keeps words: type some, or Cancel"; return; }
    edit.status.textContent = "saving …";
    edit.bar.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    let answer = null, problem = null;
    try {
      const response = await fetch(editUrl + edit.el.dataset.number, {
        method: "POST", credentials: "same-origin", body: new URLSearchParams({ text, index: edit.el.dataset.index }),
        headers: { "X-CSRF-Token": csrf(), Accept: "application/json" },
      });
      answer = await response.json().catch(() => null);
      if (!response.ok) problem = (answer && answer.error) || ("refused (" + response.status + ")");
    } catch (e) {
      problem = "not saved: the dashboard cannot be reached (" + e + ")";
    }
    edit.bar.querySelectorAll("button").forEach((b) => { b.disabled = false; });
    if (problem) { edit.status.textContent = problem; return; }
    edit.before = answer.text;  // what the transcript says now
    close(false);
    // Numbers follow the srt's cues: a longer sentence may take one more, moving those after it.
    sentences.forEach((s) => {
      const number = answer.numbers[s.dataset.index];
      if (number) s.dataset.number = String(number); else delete s.dataset.number;
    });
    blocks.filter((b) => b.dataset.index === edit.el.dataset.index).forEach((b) => {
      const label = b.querySelector("title");
      if (!label) return;
      const head = label.textContent.slice(0, label.textContent.indexOf(": ", label.textContent.indexOf("–")) + 2);
      label.textContent = head + answer.text.slice(0, 80);
    });
    edit.el.classList.add("saved");
    window.setTimeout(() => edit.el.classList.remove("saved"), 1500);
    refreshVersions();
    find();
  }

  async function refreshVersions() {
    const panel = document.getElementById("versions");
    const url = view.dataset.versionsUrl;
    if (!panel || !url) return;
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (!response.ok) return;
      const template = document.createElement("template");
      template.innerHTML = await response.text();  // the server's own escaped fragment
      panel.replaceChildren(template.content);
    } catch (e) {
      // the next page load shows it
    }
  }

  sentences.forEach((s, i) => {
    s.addEventListener("click", (e) => {
      if (editing && editing.el === s) return;  // moving the caret inside the sentence being corrected
      playFrom(i);
      open(s, e);
    });
    s.addEventListener("keydown", (e) => {
      if (editing && editing.el === s) {
        if (e.key === "Enter") { e.preventDefault(); submit(); }
        else if (e.key === "Escape") { e.preventDefault(); close(false); s.focus(); }
        return;
      }
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); playFrom(i); open(s, null); }
    });
    // Pasted markup stays out: only its text goes in.
    s.addEventListener("paste", (e) => {
      if (!(editing && editing.el === s) || !e.clipboardData) return;
      e.preventDefault();
      document.execCommand("insertText", false, clean(e.clipboardData.getData("text/plain")));
    });
  });

  // --- find in this transcript -------------------------------------------------------------------
  const box = document.getElementById("find-text");
  const count = document.getElementById("find-count");
  const highlights = window.CSS && CSS.highlights && window.Highlight ? CSS.highlights : null;
  if (highlights) view.classList.add("find-ranges");  // the matches themselves, not whole sentences
  let hits = [];  // {sentence, start, end}
  let hit = -1;

  function ranges(h) {
    const node = h.sentence.firstChild;
    if (!node || node.nodeType !== Node.TEXT_NODE || h.sentence.childNodes.length !== 1) return null;
    const r = document.createRange();
    r.setStart(node, h.start);
    r.setEnd(node, h.end);
    return r;
  }

  function paint() {
    sentences.forEach((s) => s.classList.remove("found", "found-current"));
    hits.forEach((h, i) => h.sentence.classList.add(i === hit ? "found-current" : "found"));
    if (highlights) {
      const all = hits.map(ranges).filter(Boolean);
      const one = hit >= 0 ? ranges(hits[hit]) : null;
      highlights.set("spkd-find", new Highlight(...all));
      highlights.set("spkd-find-current", one ? new Highlight(one) : new Highlight());
    }
    count.textContent = !box.value ? "" : hits.length ? (hit + 1) + " of " + hits.length : "no match";
  }

  function find() {
    if (!box) return;
    const query = box.value.trim();
    hits = [];
    if (query) {
      const folded = query.toLowerCase();
      const fold = folded.length === query.length;  // case folding that keeps offsets
      for (const s of sentences) {
        const text = s.textContent;
        const haystack = fold && text.toLowerCase().length === text.length ? text.toLowerCase() : text;
        const needle = haystack === text ? query : folded;
        for (let at = haystack.indexOf(needle); at >= 0; at = haystack.indexOf(needle, at + needle.length)) {
          hits.push({ sentence: s, start: at, end: at + needle.length });
        }
      }
    }
    hit = hits.length ? 0 : -1;
    paint();
  }

  function step(by) {
    if (!hits.length) return;
    hit = (hit + by + hits.length) % hits.length;
    paint();
    hits[hit].sentence.scrollIntoView({ block: "center" });
  }

  if (box) {
    box.addEventListener("input", () => {
      find();
      if (hit >= 0) hits[hit].sentence.scrollIntoView({ block: "center" });
    });
    box.addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); step(e.shiftKey ? -1 : 1); }
      else if (e.key === "Escape") { box.value = ""; find(); }
    });
    document.getElementById("find-next").addEventListener("click", () => step(1));
    document.getElementById("find-prev").addEventListener("click", () => step(-1));
    document.getElementById("find").addEventListener("submit", (e) => e.preventDefault());
  }
})();
