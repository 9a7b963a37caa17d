"""The `html` format, and the one transcript view it shares with the dashboard's job page.

The view (`render_timeline`, `render_legend`, `render_turns`, styled by `VIEW_CSS`) is
the same markup in both places: the standalone `NAME.html` puts it in a self-contained
page (inline CSS and JS, nothing fetched); the dashboard (daemon.web.transcript_routes)
puts it into its job page and serves `VIEW_CSS` as a stylesheet of its own origin. The
view has no inline style attributes (the dashboard's Content-Security-Policy allows
none): the timeline is SVG, placed and coloured by attributes.

Layout: the speaker timeline (`#timeline`, one `.speaker-row` per speaker, one
`rect.seg` per sentence, placed by percent of the recording, inside a link to
`#t=<seconds>`), the legend with each speaker's talk time, share and sentence count,
then the transcript by turns (`.turn`, its speaker in `.who strong` and its start as a
`#t=` link). Each sentence is a `.sent` element with `data-index` (its index in the
transcript's segments), `data-start`/`data-end` and `data-number` (the srt number of its
first cue: how `spkd edit --segment N` names it; on the dashboard, which can edit it); the first sentence at a given start
also carries `id="t=<seconds>"`, so the anchors work without JS. The standalone page's
script highlights and scrolls to the sentence for a clicked time or for the URL's hash.
Every name and sentence is escaped: text, never markup.
"""

from __future__ import annotations

import itertools
from html import escape
from typing import Callable, Mapping

from ..transcript import Segment, Transcript, join_text
from .common import brief_hms, count_of, decimal, hms, ms, one_line, title

__all__ = ["VIEW_CSS", "render_html", "render_legend", "render_timeline", "render_turns", "speaker_colour"]

# Tableau 10: distinct, colour-blind friendly; past ten speakers, golden-angle hues.
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
            "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip


def speaker_colour(speaker: int) -> str:
    """Stable per speaker number, whatever else is in the transcript."""
    if 1 <= speaker <= len(_PALETTE):
        return _PALETTE[speaker - 1]
    return f"hsl({speaker * 137.508 % 360:.1f},55%,45%)"


# The view's one stylesheet. Colours come from the page's variables where it has them
# (the dashboard's light and dark themes), else from the fallbacks (the standalone page).
VIEW_CSS = """
.timeline{margin:1rem 0;border:1px solid var(--line,#ddd);border-radius:6px;padding:.5rem}
.speaker-row{display:flex;align-items:center;gap:.6rem;margin:.25rem 0}
.speaker-row .who{width:8rem;flex:none;font-size:.85rem;font-weight:600;overflow:hidden;text-overflow:ellipsis;
  white-space:nowrap}
svg.bars{flex:1;min-width:0;height:1.1rem;background:var(--soft,#f1f1f1);border-radius:3px}
rect.seg{opacity:.85;cursor:pointer}
rect.seg:hover,rect.seg.active{opacity:1;stroke:var(--stroke,#000);stroke-width:2px;vector-effect:non-scaling-stroke}
.legend{display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;font-size:.9rem;margin:0 0 1rem}
svg.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.35em;vertical-align:-.05em}
.turn{margin:.7rem 0}
.turn .who{margin:0;font-size:.85rem}
.turn .who strong{margin-right:.4rem}
a.time{font:.8rem ui-monospace,monospace;color:var(--muted,#666);text-decoration:none}
a.time:hover{text-decoration:underline}
.turn .said{margin:.1rem 0 0 1.15rem;overflow-wrap:anywhere}
.sent{border-radius:3px}
.sent.active,.sent.current{background:var(--hl,#fff3a8);color:var(--hl-fg,#1d232a)}
@media (max-width:640px){.speaker-row .who{width:5.5rem}}
"""

_PAGE_CSS = """
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI","PingFang SC","Hiragino Sans GB","Microsoft YaHei",
  "Noto Sans CJK SC",sans-serif;color:#222;background:#fff;margin:0 auto;max-width:60rem;padding:1rem 1.5rem}
h1{font-size:1.3rem;margin:.2rem 0}.meta{color:#666;font-size:.9rem}
.turn.active{background:#fafafa}
@media (prefers-color-scheme:dark){body{color:#e3e6ea;background:#15191d}.meta{color:#9aa4ae}
  .turn.active{background:#1f252b}}
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
    var seg=document.querySelector('rect.seg[data-index="'+s.dataset.index+'"]');if(seg)seg.classList.add('active');
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


def _swatch(speaker: int) -> str:
    return (f'<svg class="swatch" viewBox="0 0 10 10" aria-hidden="true">'
            f'<rect width="10" height="10" rx="2" fill="{speaker_colour(speaker)}"></rect></svg>')


def render_timeline(t: Transcript) -> str:
    """`#timeline`: a row per speaker, a block per sentence where it lies in the recording."""
    duration = max([t.audio_seconds, *(s.end for s in t.segments)]) or 1.0  # avoid /0

    def pct(x: float) -> str:
        return f"{max(0.0, min(100.0, x / duration * 100)):.3f}%"

    rows = []
    for sp in t.speakers:
        blocks = "".join(
            f'<a href="#t={_t(s.start)}" data-start="{_t(s.start)}" data-index="{i}">'
            f'<rect class="seg" data-index="{i}" data-start="{_t(s.start)}" x="{pct(s.start)}" y="0" '
            f'width="{pct(max(s.duration, duration / 1000))}" height="100%" fill="{speaker_colour(sp.speaker)}">'
            f"<title>{escape(f'{sp.display} {_span(s.start)}–{_span(s.end)}: {one_line(s.text)[:80]}')}</title>"
            "</rect></a>"
            for i, s in enumerate(t.segments)
            if s.speaker == sp.speaker
        )
        rows.append(
            f'<div class="speaker-row" data-speaker="{sp.speaker}"><span class="who">{_swatch(sp.speaker)}'
            f'{escape(sp.display)}</span><svg class="bars" role="img" aria-label="when {escape(sp.display)} speaks">'
            f"{blocks}</svg></div>"
        )
    return '<section id="timeline" class="timeline">\n' + "\n".join(rows) + "\n</section>\n"


def render_legend(t: Transcript) -> str:
    """Each speaker with their talk time, share of all talk and number of sentences."""
    talk_total = sum(sp.talk_seconds for sp in t.speakers) or 1.0
    items = "".join(
        f'<span class="talk" data-speaker="{sp.speaker}">{_swatch(sp.speaker)}{escape(sp.display)}: '
        f"{_span(sp.talk_seconds)} ({sp.talk_seconds / talk_total:.0%}, {count_of(sp.segments, 'sentence')})</span>"
        for sp in t.speakers
    )
    return f'<div class="legend">{items}</div>\n'


def render_turns(t: Transcript, numbers: Mapping[int, int] | None = None) -> str:
    """The transcript by speaker turns, one `.sent` per sentence; `numbers` (segment index ->
    its number, daemon.jobs.corrections.numbering) gives the sentences their `data-number`."""
    numbers = numbers or {}
    anchors: set[str] = set()
    segs = list(enumerate(t.segments))
    return "\n".join(_turn(list(group), anchors, t.speaker_display, numbers)
                     for _, group in itertools.groupby(segs, key=lambda p: p[1].speaker))


def render_html(t: Transcript) -> str:
    """`NAME.html`: the view in a page of its own, with its styles and script inline."""
    name = title(t)
    return (
        "<!DOCTYPE html>\n"
        f'<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">\n'
        f"<title>{escape(name)}</title>\n<style>{_PAGE_CSS}{VIEW_CSS}</style></head>\n<body>\n"
        f"<header><h1>{escape(name)}</h1><div class=\"meta\">{_span(t.audio_seconds)} · "
        f"{count_of(len(t.speakers), 'speaker')} · {count_of(len(t.segments), 'sentence')}</div></header>\n"
        + render_timeline(t) + render_legend(t)
        + '<main id="transcript">\n' + render_turns(t) + "\n</main>\n"
        f"<script>{_JS}</script>\n</body></html>\n"
    )


def _turn(group: list[tuple[int, Segment]], anchors: set[str], display: Callable[[int], str],
          numbers: Mapping[int, int]) -> str:
    """One turn of one speaker; `anchors` holds the `t=…` ids already used."""
    first_index, first = group[0]
    body, prev = "", ""
    for i, s in group:
        text = one_line(s.text)
        # Same spacing rule as Transcript.text: a space between Latin sentences only.
        if prev and text and join_text((prev, text)) != prev + text:
            body += " "
        anchor = "" if _t(s.start) in anchors else f' id="t={_t(s.start)}"'
        anchors.add(_t(s.start))
        number = f' data-number="{numbers[i]}"' if i in numbers else ""
        body += (f'<span class="sent" data-index="{i}" data-start="{_t(s.start)}" data-end="{_t(s.end)}"'
                 f'{number}{anchor} tabindex="0">{escape(text)}</span>')
        prev = text or prev
    start = _t(first.start)
    return (
        f'<div class="turn" data-speaker="{first.speaker}"><p class="who">{_swatch(first.speaker)}'
        f"<strong>{escape(display(first.speaker))}</strong>"
        f'<a class="time" href="#t={start}" data-start="{start}" data-index="{first_index}">{hms(ms(first.start))}</a>'
        f'</p><p class="said">{body}</p></div>'
    )
