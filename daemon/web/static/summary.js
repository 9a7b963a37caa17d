// The job page's summary panel (templates/_summary.html): clicking a point, or one of its
// moments, plays the recording from there. Listens on the document, so a panel that the
// live refresh replaced keeps working. Without a player (the source left the archive) it
// scrolls the transcript to the sentence that starts there instead.
"use strict";

(function () {
  function sentenceAt(time) {
    const all = Array.from(document.querySelectorAll(".sent[data-start]"));
    let found = null;
    for (const s of all) {
      if (parseFloat(s.dataset.start) <= time + 1e-3) found = s; else break;
    }
    return found;
  }

  function playFrom(time) {
    const player = document.getElementById("player");
    if (player) {
      player.currentTime = time;
      const playing = player.play();
      if (playing && playing.catch) playing.catch(() => {});
      return;
    }
    const sentence = sentenceAt(time);
    if (sentence) {
      sentence.scrollIntoView({ block: "center" });
      sentence.focus({ preventScroll: true });
    }
  }

  function target(event) {
    const el = event.target.closest("#summary [data-t]");
    return el && Number.isFinite(parseFloat(el.dataset.t)) ? el : null;
  }

  document.addEventListener("click", (event) => {
    const el = target(event);
    if (!el) return;
    event.preventDefault();
    playFrom(parseFloat(el.dataset.t));
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" && event.key !== " ") return;
    const el = target(event);
    if (!el) return;
    event.preventDefault();
    playFrom(parseFloat(el.dataset.t));
  });
})();
