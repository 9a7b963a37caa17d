// spkd dashboard: live refresh and uploads (the transcript: transcript.js). No framework, no
// build step; everything it inserts comes from the server already escaped, or is set
// as text (textContent), never as markup.
"use strict";

(function () {
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  // --- live parts: fetch the fragment again every few seconds ---------------------
  function live(container) {
    const url = container.dataset.liveUrl;
    const every = 1000 * parseFloat(container.dataset.liveSeconds || "2");
    let busy = false;
    async function refresh() {
      if (busy || document.hidden) return;
      busy = true;
      try {
        const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
        if (response.ok) {
          const html = await response.text();
          const before = container.dataset.state;
          const template = document.createElement("template");
          template.innerHTML = html;
          const fresh = template.content.querySelector("[data-state]");
          const after = fresh ? fresh.dataset.state : before;
          if (before && after && before !== after && after === "done") {
            window.location.reload();  // the transcript, the player and the downloads appear
            return;
          }
          if (before && after && before !== after) container.dataset.state = after;
          container.replaceChildren(template.content);
        }
      } catch (e) {
        // the server is restarting: try again next time
      } finally {
        busy = false;
      }
    }
    window.setInterval(refresh, every);
  }
  // A finished job's page has nothing left to follow.
  document.querySelectorAll("[data-live-url]").forEach((c) => { if (c.dataset.state !== "done") live(c); });

  // --- uploads ------------------------------------------------------------------------
  const form = document.getElementById("upload");
  if (form) {
    const zone = document.getElementById("dropzone");
    const input = document.getElementById("upload-files");
    const result = document.getElementById("upload-result");
    function line(text, bad) {
      const li = document.createElement("li");
      li.textContent = text;
      if (bad) li.className = "bad";
      result.appendChild(li);
    }
    async function send(files) {
      if (!files || !files.length) return;
      const data = new FormData();
      for (const el of form.querySelectorAll("input[name]")) {
        if (el.type === "file") continue;
        if (el.type === "checkbox" && !el.checked) continue;
        if (el.value !== "") data.append(el.name, el.value);
      }
      for (const f of files) data.append("file", f, f.name);
      line("uploading " + Array.from(files).map((f) => f.name).join(", ") + " …");
      try {
        const response = await fetch("/upload", { method: "POST", body: data, credentials: "same-origin",
                                                   headers: { "X-CSRF-Token": csrf() } });
        const answer = await response.json();
        if (!response.ok) { line("refused: " + (answer.error || response.status), true); return; }
        for (const f of answer.files) line(f.name + " → inbox/" + f.saved_as + " (" + f.size_bytes + " bytes)");
      } catch (e) {
        line("upload failed: " + e, true);
      }
    }
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("over");
      send(e.dataTransfer && e.dataTransfer.files);
    });
    input.addEventListener("change", () => { send(input.files); input.value = ""; });
  }
  // The job page's transcript (player, corrections, find): static/transcript.js.
})();
