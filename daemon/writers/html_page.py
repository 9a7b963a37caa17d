"""The `html` format: one self-contained page (inline CSS and JS, nothing fetched).

Layout: a header (source name, duration), the speaker timeline (`#timeline`, one
`.speaker-row` per speaker, one `.seg` block per sentence, placed by percent of
the recording), a legend with talk times, then the transcript by turns. Every
time and every timeline block links to `#t=<seconds>`; each sentence is a
`.sent` element with `data-start`/`data-end` (the first one at a given start
also carries `id="t=<seconds>"`, so the anchors work without JS). The script
highlights and scrolls to the sentence for a clicked time or for the URL's hash.
"""

from __future__ import annotations

import itertools
from html import escape
from typing import Callable

from ..transcript import Segment, Transcript, join_text
from .common import brief_hms, count_of, decimal, hms, ms, one_line, title

# Tableau 10: distinct, colour-blind friendly; past ten speakers, golden-angle hues.
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
            "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip


def speaker_colour(speaker: int) -> str:
    """Stable per speaker number, whatever else is in the transcript."""
    if 1 <= speaker <= len(_PALETTE):
        return _PALETTE[speaker - 1]
    return f"hsl({speaker * 137.508 % 360:.1f},55%,45%)"


_CSS = """
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI","PingFang SC","Hiragino Sans GB","Microsoft YaHei",
  "Noto Sans CJK SC",sans-serif;color:#222;
  margin:0 auto;max-width:60rem;padding:1rem 1.5rem}
h1{font-size:1.3rem;margin:.2rem 0}.meta{color:#666;font-size:.9rem}
#timeline{margin:1rem 0;border:1px solid #ddd;border-radius:6px;padding:.5rem}
.speaker-row{display:flex;align-items:center;margin:.25rem 0}
.speaker-row .name{width:7rem;flex:none;font-size:.85rem;color:var(--c);font-weight:600}
.bar{position:relative;flex:1;height:1.1rem;background:#f1f1f1;border-radius:3px}
.seg{position:absolute;top:0;bottom:0;min-width:2px;background:var(--c);opacity:.85;border-radius:2px}
.seg:hover,.seg.active{opacity:1;outline:2px solid #000}
.legend{display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;font-size:.9rem;margin-bottom:1rem}
.swatch{display:inline-block;width:.8rem;height:.8rem;border-radius:2px;background:var(--c);margin-right:.3rem}
.turn{margin:.6rem 0;padding:.2rem .4rem;border-left:4px solid var(--c)}
.turn .who{font-weight:600;color:var(--c);margin-right:.4rem}
a.time{font:.8rem ui-monospace,monospace;color:#666;text-decoration:none;margin-right:.4rem}
a.time:hover{text-decoration:underline}
.sent.active{background:#fff3a8}.turn.active{background:#fafafa}
"""

_JS = """
(function(){
  var sents=[].slice.call(document.querySelectorAll('.sent'));
  function at(t){  // the sentence with the latest start at or before t
    var best=null;
    sents.forEach(function(s){
      var x=parseFloat(s.dataset.start);
      if(x<=t+0.0005&&(!best||x>parseFloat(best.dataset.start)))best=s;
    });
    return best||sents[0];
  }
  function show(t,index){
    var s=index!=null&&document.querySelector('.sent[data-index="'+index+'"]')||at(t);if(!s)return;
    [].forEach.call(document.querySelectorAll('.active'),function(e){e.classList.remove('active');});
    s.classList.add('active');s.closest('.turn').classList.add('active');
    var seg=document.querySelector('.seg[data-index="'+s.dataset.index+'"]');if(seg)seg.classList.add('active');
    s.scrollIntoView({block:'center',behavior:'smooth'});
  }
  function fromHash(){
    var m=/^#t=([0-9.]+)/.exec(location.hash);if(!m)return;
    var t=parseFloat(m[1]),cur=document.querySelector('.sent.active');
    if(!cur||Math.abs(parseFloat(cur.dataset.start)-t)>0.0005)show(t);  // a click already showed it
  }
  document.addEventListener('click',function(e){
    var a=e.target.closest('a[data-start]');if(a)show(parseFloat(a.dataset.start),a.dataset.index);
  });
  window.addEventListener('hashchange',fromHash);fromHash();
})();
"""


def _t(seconds: float) -> str:
    return decimal(ms(seconds))


def _span(seconds: float) -> str:
    return brief_hms(ms(seconds))


def render_html(t: Transcript) -> str:
    name = title(t)
    duration = max([t.audio_seconds, *(s.end for s in t.segments)]) or 1.0  # avoid /0
    segs = list(enumerate(t.segments))

    def pct(x: float) -> str:
        return f"{max(0.0, min(100.0, x / duration * 100)):.3f}%"

    rows = []
    for sp in t.speakers:
        blocks = "".join(
            f'<a class="seg" data-index="{i}" data-start="{_t(s.start)}" href="#t={_t(s.start)}" '
            f'style="left:{pct(s.start)};width:{pct(s.duration)}" '
            f'title="{escape(f"{sp.display} {_span(s.start)}–{_span(s.end)}: {one_line(s.text)[:80]}")}"></a>'
            for i, s in segs
            if s.speaker == sp.speaker
        )
        rows.append(
            f'<div class="speaker-row" data-speaker="{sp.speaker}" style="--c:{speaker_colour(sp.speaker)}">'
            f'<span class="name">{escape(sp.display)}</span><div class="bar">{blocks}</div></div>'
        )
    talk_total = sum(sp.talk_seconds for sp in t.speakers) or 1.0
    legend = "".join(
        f'<span style="--c:{speaker_colour(sp.speaker)}"><span class="swatch"></span>{escape(sp.display)}: '
        f"{_span(sp.talk_seconds)} ({sp.talk_seconds / talk_total:.0%}, {count_of(sp.segments, 'sentence')})</span>"
        for sp in t.speakers
    )
    anchors: set[str] = set()
    turns = [_turn(list(group), anchors, t.speaker_display) for _, group in itertools.groupby(segs, key=lambda p: p[1].speaker)]
    return (
        "<!DOCTYPE html>\n"
        f'<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">\n'
        f"<title>{escape(name)}</title>\n<style>{_CSS}</style></head>\n<body>\n"
        f"<header><h1>{escape(name)}</h1><div class=\"meta\">{_span(t.audio_seconds)} · "
        f"{count_of(len(t.speakers), 'speaker')} · {count_of(len(t.segments), 'sentence')}</div></header>\n"
        f'<section id="timeline">\n' + "\n".join(rows) + "\n</section>\n"
        f'<div class="legend">{legend}</div>\n'
        '<main id="transcript">\n' + "\n".join(turns) + "\n</main>\n"
        f"<script>{_JS}</script>\n</body></html>\n"
    )


def _turn(group: list[tuple[int, Segment]], anchors: set[str], display: Callable[[int], str]) -> str:
    """One paragraph per speaker turn; `anchors` holds the `t=…` ids already used."""
    first = group[0][1]
    body, prev = "", ""
    for i, s in group:
        text = one_line(s.text)
        # Same spacing rule as Transcript.text: a space between Latin sentences only.
        if prev and text and join_text((prev, text)) != prev + text:
            body += " "
        anchor = "" if _t(s.start) in anchors else f' id="t={_t(s.start)}"'
        anchors.add(_t(s.start))
        body += (
            f'<span class="sent"{anchor} data-index="{i}" data-start="{_t(s.start)}" '
            f'data-end="{_t(s.end)}">{escape(text)}</span>'
        )
        prev = text or prev
    start = _t(first.start)
    return (
        f'<p class="turn" data-speaker="{first.speaker}" style="--c:{speaker_colour(first.speaker)}">'
        f'<a class="time" href="#t={start}" data-start="{start}" data-index="{group[0][0]}">{hms(ms(first.start))}</a>'
        f'<span class="who">{escape(display(first.speaker))}</span>{body}</p>'
    )

