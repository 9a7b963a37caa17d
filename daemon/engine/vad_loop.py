"""FSMN-VAD's frame loop (FunASR 1.4.16) on plain Python values: the same decisions, bit for bit.

FunASR's `FsmnVADStreaming` decides speech and silence one 10-ms frame at a time
(`DetectCommonFrames` / `DetectLastFrames` → `GetFrameState` + `DetectOneFrame` and the
window detector, `OnVoiceStart`/`OnVoiceDetected`/`OnVoiceEnd`, `ResetDetection` with its
`DropCachedFrames`). Every frame reads its score with three tensor indexings and an
`.item()`, looks up `cache["stats"]` a dozen times, compares enums, and re-slices the
waveform buffer as a tensor: about 13 µs a frame, 30,000 frames for 5 minutes of audio,
the largest stage of a GPU job. `detect_frames` runs the same state machine over one call's
frames with its state in local variables:

* **frame states first, for the whole call**: a frame's state depends only on its score,
  its decibel, and the running noise level (FunASR's `noise_average_decibel`, updated on
  non-speech frames), never on the state machine, so they are computed before it. FunASR
  compares `exp(log(1 - s)) >= exp(log(s) * ratio) + threshold` with `math`; numpy's
  `log`/`exp` may differ from the C library's in the last bit, so numpy only decides the
  frames whose two sides are apart by far more than any rounding (1e-9), and the rest are
  decided with `math` exactly as FunASR does. The noise level is a float recurrence, run
  in FunASR's order and expression.
* **the waveform buffer as numbers**: FunASR keeps `data_buf` (a view of `data_buf_all`)
  and `data_buf_start_frame`; the decisions never read the samples, only lengths (for the
  messages FunASR prints when they look wrong). The loop keeps where each view starts,
  and the drops `ResetDetection` makes (each cloning the remaining waveform and scores in
  FunASR) become one slice and clone when the call ends, with the same content.
* **everything else** (window, state machine, segment list) is FunASR's code transcribed
  into locals: the same branches in the same order, the same integer and float
  arithmetic, the same `E2EVadSpeechBufWithDoa` objects appended and updated, and the same
  state left in `cache` for the next call.

Where an input could make FunASR's own code raise or behave in ways this loop does not
model (a score at 0 or 1, which `math.log` refuses; frame probabilities kept; an
unexpected state or shape), the call goes to FunASR's own method unchanged. Tested equal
on random score sequences and option sets (tests/integration/test_vad_loop.py) and on
whole results (tests/integration/test_pipeline_hooks.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

# FunASR's enums, by value (VadStateMachine, AudioChangeState, VadDetectMode)
_START, _IN_SPEECH, _END = 1, 2, 3
_SINGLE, _MULTIPLE = 0, 1
# Numpy decides a frame only when its two sides are this far apart (relative to the
# right side's size): the C library's and numpy's log/exp differ by a few ulp at most.
_DECIDED = 1e-9
# Score tensors whose values numpy holds exactly as `.item()` gives them.
_SCORE_TYPES = ("torch.float32", "torch.float64")


def _funasr_classes() -> tuple[Any, Any, Any]:
    from funasr.models.fsmn_vad_streaming.model import E2EVadSpeechBufWithDoa, FrameState, VadStateMachine

    return E2EVadSpeechBufWithDoa, FrameState, VadStateMachine


def hook(vad_model: Any) -> Callable[[], None]:
    """Run `detect_frames` in place of this FsmnVADStreaming's `DetectCommonFrames` and
    `DetectLastFrames` (instance attributes: FunASR's `forward` calls them through self);
    returns what puts FunASR's methods back."""

    def common(cache: dict | None = None) -> int:
        return detect_frames(vad_model, cache if cache is not None else {}, False)

    def last(cache: dict | None = None) -> int:
        return detect_frames(vad_model, cache if cache is not None else {}, True)

    vad_model.DetectCommonFrames = common
    vad_model.DetectLastFrames = last

    def undo() -> None:
        for name in ("DetectCommonFrames", "DetectLastFrames"):
            if name in vars(vad_model):
                delattr(vad_model, name)  # the class's method shows again

    return undo


def detect_frames(model: Any, cache: dict, is_final: bool) -> int:
    """FunASR's `DetectLastFrames` (is_final) or `DetectCommonFrames` for this call's
    frames: the same decisions, segments and cache state; FunASR's own method where
    `_frame_states` or `_unsupported` says it must."""
    _, FrameState, VadStateMachine = _funasr_classes()
    stats = cache["stats"]
    if stats.vad_state_machine == VadStateMachine.kVadInStateEndPointDetected:
        return 0
    own = type(model).DetectLastFrames if is_final else type(model).DetectCommonFrames
    if _unsupported(model, cache):
        return own(model, cache=cache)
    noise = stats.noise_average_decibel
    segs = stats.output_data_buf
    kept = len(segs), (dict(vars(segs[-1])) if segs else None)
    states = _frame_states(model, stats)
    if states is None:
        return own(model, cache=cache)
    try:
        _run(model, cache, states, is_final, FrameState, VadStateMachine)
    except _Unmodelled:  # nothing of the cache written yet but these: put them back, let FunASR run
        stats.noise_average_decibel = noise
        del segs[kept[0]:]
        if kept[1] is not None:
            vars(segs[-1]).clear()
            vars(segs[-1]).update(kept[1])
        return own(model, cache=cache)
    return 0


class _Unmodelled(Exception):
    """The call reached a state `_run` does not model (a segment ending after the frame
    being decided, so that FunASR's next frames index its buffers from the end)."""


def _unsupported(model: Any, cache: dict) -> bool:
    """True where the loop below does not model FunASR's behaviour (FunASR's code runs)."""
    _, FrameState, VadStateMachine = _funasr_classes()
    opts, stats, wd = model.vad_opts, cache["stats"], cache["windows_detector"]
    block, drop = opts.nn_eval_block_size, stats.last_drop_frames
    scores = stats.scores
    if opts.output_frame_probs or not isinstance(block, int) or block < 1:
        return True
    if stats.vad_state_machine not in (VadStateMachine.kVadInStateStartPointNotDetected,
                                       VadStateMachine.kVadInStateInSpeechSegment):
        return True
    if wd.pre_frame_state not in (FrameState.kFrameStateSil, FrameState.kFrameStateSpeech):
        return True
    if not isinstance(wd.win_size_frame, int) or wd.win_size_frame < 1 or len(wd.win_state) != wd.win_size_frame:
        return True
    ids = list(stats.sil_pdf_ids)
    if len(ids) != opts.silence_pdf_num or not ids or not all(isinstance(i, int) for i in ids):
        return True  # FunASR asserts, or takes log(0)
    if scores is None or scores.dim() != 3 or scores.shape[0] != 1 or str(scores.dtype) not in _SCORE_TYPES:
        return True
    first = stats.frm_cnt - block - drop  # this call's first frame, in the current buffers
    if first < 0 or stats.data_buf_all is None or stats.data_buf is None:
        return True
    # FunASR reads scores[0][t] for every frame that has a decibel
    read = min(first + block, len(stats.decibel))
    if read > scores.shape[1] or any(i >= scores.shape[2] or i < -scores.shape[2] for i in ids):
        return True
    if not isinstance(stats.speech_noise_thres, (int, float)):
        return True
    ratio = opts.speech_2_noise_ratio
    return not (isinstance(ratio, (int, float)) and ratio >= 0)  # exp(log(s) * ratio) stays <= 1


def _frame_states(model: Any, stats: Any) -> list[int] | None:
    """FunASR's `GetFrameState` for this call's frames, as 0 (silence) and 1 (speech),
    mapped as `DetectOneFrame` maps them (fe_prior_thres); `stats.noise_average_decibel`
    left as FunASR leaves it. None where a score would make `math.log` raise."""
    import numpy as np

    opts = model.vad_opts
    block = opts.nn_eval_block_size
    first = stats.frm_cnt - block - stats.last_drop_frames
    have = max(0, min(block, len(stats.decibel) - first))  # frames past the decibels are silence
    decibel = stats.decibel[first:first + have]
    scores = stats.scores[0, first:first + have].detach().cpu().numpy().astype(np.float64)
    ids = list(stats.sil_pdf_ids)
    if len(ids) > 1:
        score = np.zeros(have, dtype=np.float64)  # sum() starts from 0, adding in the ids' order
        for i in ids:
            score = score + scores[:, i]
    else:
        score = scores[:, ids[0]]
    d = np.asarray(decibel, dtype=np.float64)
    evaluated = ~(d < opts.decibel_thres)  # FunASR: `if cur_decibel < decibel_thres: silence`
    if bool((evaluated & ((score <= 0) | (score >= 1))).any()):
        return None  # math.log(0) or of a negative number: FunASR raises, let it
    ratio, threshold = opts.speech_2_noise_ratio, stats.speech_noise_thres
    with np.errstate(all="ignore"):
        lhs = np.exp(np.log(1.0 - score))
        rhs = np.exp(np.log(score) * ratio) + threshold
        decided = np.abs(lhs - rhs) > _DECIDED * (1.0 + np.abs(rhs))
    like = (lhs >= rhs).tolist()
    for k in np.flatnonzero(evaluated & ~decided).tolist():
        s = float(score[k])  # FunASR's order: log(s) * ratio, 1.0 - s, log, exp, exp + thres
        noise_prob = math.log(s) * ratio
        speech_prob = math.log(1.0 - s)
        like[k] = math.exp(speech_prob) >= math.exp(noise_prob) + threshold

    speech = 1 if math.fabs(1.0) > opts.fe_prior_thres else 0  # DetectOneFrame's mapping of speech
    snr_thres, decibel_thres = opts.snr_thres, opts.decibel_thres
    frames = opts.noise_frame_num_used_for_snr
    average = stats.noise_average_decibel
    states = [0] * block
    for k in np.flatnonzero(evaluated).tolist():
        cur = decibel[k]
        if like[k]:
            if cur - average >= snr_thres and cur >= decibel_thres:
                states[k] = speech
        elif average < -99.9:
            average = cur
        else:
            average = (cur + average * (frames - 1)) / frames
    stats.noise_average_decibel = average
    return states


def _tail_start(length: int, offset: int) -> int:
    """Where `x[offset:]` starts in a sequence of `length` items (Python's slicing)."""
    if offset < 0:
        offset = max(0, length + offset)
    return min(offset, length)


def _run(model: Any, cache: dict, states: list[int], is_final: bool, FrameState: Any, VadStateMachine: Any) -> None:
    """DetectOneFrame for each frame of the call, FunASR's code with its state in locals."""
    SpeechBuf = _funasr_classes()[0]
    opts, stats, wd = model.vad_opts, cache["stats"], cache["windows_detector"]
    fim, rate = opts.frame_in_ms, opts.sample_rate
    shift = int(fim * rate / 1000)  # PopDataBufTillFrame's and DropCachedFrames' frame of samples
    one_frame = int(1 * rate * fim / 1000)  # PopDataToOutputBuf, frm_cnt = 1
    end_extra = int(max(0, int(opts.frame_length_ms * rate / 1000 - rate * fim / 1000)))
    pop_one = int(1 * fim * rate / 1000)
    window = int(wd.win_size_frame)
    to_speech, to_silence = wd.sil_to_speech_frmcnt_thres, wd.speech_to_sil_frmcnt_thres
    latency = window + (int(opts.lookback_time_start_point / fim) if opts.do_extend else 0)
    max_frames = opts.max_single_segment_time / fim
    single, multiple = opts.detect_mode == _SINGLE, opts.detect_mode == _MULTIPLE
    extend = bool(opts.do_extend)
    lookahead = int(opts.lookahead_time_end_point / fim)
    end_silence = stats.max_end_sil_frame_cnt_thresh
    end_lookback = int(end_silence / fim)
    if extend:
        end_lookback = max(0, end_lookback - lookahead - 1)
    max_start_silence = opts.max_start_silence_time
    frm_cnt = stats.frm_cnt

    # the state machine
    st = stats.vad_state_machine.value
    silent = stats.continous_silence_frame_count
    last_speech, last_silence = stats.latest_confirmed_speech_frame, stats.lastest_confirmed_silence_frame
    cstart, cend = stats.confirmed_start_frame, stats.confirmed_end_frame
    ends = stats.number_end_time_detected
    segs = stats.output_data_buf
    # the window detector
    win, ws, pos = list(wd.win_state), wd.win_sum, wd.cur_win_pos
    pre = 1 if wd.pre_frame_state == FrameState.kFrameStateSpeech else 0
    # the buffers, as positions in the call's data_buf_all: [all_a, end) is data_buf_all,
    # [buf_a, end) is data_buf
    start, drop = stats.data_buf_start_frame, stats.last_drop_frames
    end = len(stats.data_buf_all)
    all_a, buf_a = 0, end - len(stats.data_buf)
    dropped = 0  # frames dropped from decibel and scores
    moved = False  # data_buf re-sliced
    reset = False  # ResetDetection ran
    flags: dict[str, bool] = {}

    def till(frame: int) -> None:  # PopDataBufTillFrame
        nonlocal start, buf_a, moved
        while start < frame:
            if end - buf_a < shift:
                raise RuntimeError("FunASR's VAD would wait forever for samples it does not have")
            start += 1
            buf_a = all_a + _tail_start(end - all_a, (start - drop) * shift)
            moved = True

    # PopDataToOutputBuf for one frame. Its print()s are FunASR's own messages (about the
    # buffer's lengths), printed as FunASR prints them so that both loops say the same.
    def pop(frame: int, first: bool, last: bool, sent_end: bool) -> None:
        nonlocal start
        till(frame)
        expected = one_frame + (end_extra if last else 0)
        have = end - buf_a
        if sent_end:
            expected = max(expected, have)
        if have < expected:
            print("error in calling pop data_buf\n")
        if len(segs) == 0 or first:
            seg = SpeechBuf()
            segs.append(seg)
            seg.Reset()
            seg.start_ms = frame * fim
            seg.end_ms = seg.start_ms
            seg.doa = 0
        seg = segs[-1]
        if seg.end_ms != frame * fim:
            print("warning\n")
        to_pop = expected if sent_end else pop_one
        if to_pop > have:
            print('VAD data_to_pop is bigger than cache["stats"].data_buf.size()!!!\n')
        seg.doa = 0
        if seg.end_ms != frame * fim:
            print("Something wrong with the VAD algorithm\n")
        start += 1
        seg.end_ms = (frame + 1) * fim
        if first:
            seg.contain_seg_start_point = True
        if last:
            seg.contain_seg_end_point = True

    def voice(frame: int) -> None:  # OnVoiceDetected
        nonlocal last_speech
        last_speech = frame
        pop(frame, False, False, False)

    def voice_start(frame: int, fake: bool) -> None:  # OnVoiceStart
        nonlocal cstart
        if cstart != -1:
            print("not reset vad properly\n")
        else:
            cstart = frame
        if not fake and st == _START:
            pop(cstart, True, False, False)

    def voice_end(frame: int, fake: bool, last_frame: bool) -> None:  # OnVoiceEnd
        nonlocal cend, ends
        for t in range(last_speech + 1, frame):
            voice(t)
        if cend != -1:
            print("not reset vad properly\n")
        else:
            cend = frame
        if not fake:
            flags["sil_frame"] = True
            pop(cend, False, True, last_frame)
        ends += 1

    def drop_cached(frames: int) -> None:  # DropCachedFrames
        nonlocal all_a, buf_a, drop, dropped, moved
        if frames > j + 1:  # FunASR's next frame would read scores[0][negative index]
            raise _Unmodelled
        if frames > frm_cnt:
            raise RuntimeError(f"Cannot drop through frame {frames}; only {frm_cnt} frames exist")
        real = frames - drop
        if real <= 0:
            return
        all_a = all_a + _tail_start(end - all_a, real * shift)
        dropped += real
        drop = frames
        buf_a = all_a + _tail_start(end - all_a, max(start - drop, 0) * shift)
        moved = True

    first_frame = frm_cnt - len(states)
    last_k = len(states) - 1
    j = first_frame
    completed = False
    try:
        for k, x in enumerate(states):
            j = first_frame + k
            final = is_final and k == last_k
            # WindowDetector.DetectOneFrame
            ws -= win[pos]
            ws += x
            win[pos] = x
            pos = (pos + 1) % window
            if pre == 0:
                if ws >= to_speech:
                    pre = 1
                    change = 3  # kChangeStateSil2Speech
                else:
                    change = 2  # kChangeStateSil2Sil
            elif ws <= to_silence:
                pre = 0
                change = 1  # kChangeStateSpeech2Sil
            else:
                change = 0  # kChangeStateSpeech2Speech

            if change == 0:
                silent = 0
                if st == _IN_SPEECH:
                    if j - cstart + 1 > max_frames:
                        flags["max_time_out"] = True
                        voice_end(j, False, False)
                        st = _END
                    elif not final:
                        last_speech = j  # OnVoiceDetected(j), inline where it is a plain step
                        if start >= j and segs:
                            have = end - buf_a
                            if have < one_frame:
                                print("error in calling pop data_buf\n")
                            seg = segs[-1]
                            if seg.end_ms != j * fim:
                                print("warning\n")
                            if pop_one > have:
                                print('VAD data_to_pop is bigger than cache["stats"].data_buf.size()!!!\n')
                            seg.doa = 0
                            if seg.end_ms != j * fim:
                                print("Something wrong with the VAD algorithm\n")
                            start += 1
                            seg.end_ms = (j + 1) * fim
                        else:
                            pop(j, False, False, False)
                    else:
                        voice_end(j, False, True)
                        st = _END
            elif change == 2:
                silent += 1
                if st == _START:
                    if (single and silent * fim > max_start_silence) or (final and ends == 0):
                        for t in range(last_silence + 1, j):
                            last_silence = t  # OnSilenceDetected, in the state _START
                            till(t)
                        voice_start(0, True)
                        voice_end(0, True, False)
                        st = _END
                    elif j >= latency:
                        last_silence = j - latency  # OnSilenceDetected, PopDataBufTillFrame inline for one step
                        if start == last_silence - 1 and end - buf_a >= shift:
                            start = last_silence
                            buf_a = all_a + _tail_start(end - all_a, (start - drop) * shift)
                            moved = True
                        else:
                            till(last_silence)
                elif st == _IN_SPEECH:
                    if silent * fim >= end_silence:
                        voice_end(j - end_lookback, False, False)
                        st = _END
                    elif j - cstart + 1 > max_frames:
                        voice_end(j, False, False)
                        st = _END
                    elif extend and not final:
                        if silent <= lookahead:
                            last_speech = j
                            pop(j, False, False, False)
                    elif final:
                        voice_end(j, False, True)
                        st = _END
            elif change == 3:
                silent = 0
                flags["pre_end_cleared"] = True
                if st == _START:
                    frame = max(start, j - latency)
                    voice_start(frame, False)
                    st = _IN_SPEECH
                    for t in range(frame + 1, j + 1):
                        voice(t)
                elif st == _IN_SPEECH:
                    for t in range(last_speech + 1, j):
                        voice(t)
                    if j - cstart + 1 > max_frames:
                        voice_end(j, False, False)
                        st = _END
                    elif not final:
                        voice(j)
                    else:
                        voice_end(j, False, True)
                        st = _END
            else:  # kChangeStateSpeech2Sil
                silent = 0
                if st == _IN_SPEECH:
                    if j - cstart + 1 > max_frames:
                        voice_end(j, False, False)
                        st = _END
                    elif not final:
                        voice(j)
                    else:
                        voice_end(j, False, True)
                        st = _END

            if st == _END and multiple:  # ResetDetection
                silent, last_speech, last_silence, cstart, cend, st = 0, 0, -1, -1, -1, _START
                win, ws, pos, pre = [0] * window, 0, 0, 0
                reset = True
                if segs:
                    assert segs[-1].contain_seg_end_point == True  # noqa: E712 (FunASR's check, as it is)
                    drop_cached(int(segs[-1].end_ms / fim))
        completed = True
    except _Unmodelled:
        raise
    except BaseException:
        completed = True  # FunASR's own code stops here too, keeping its state so far
        raise
    finally:
        if completed:
            stats.vad_state_machine = VadStateMachine(st)
            stats.continous_silence_frame_count = silent
            stats.latest_confirmed_speech_frame, stats.lastest_confirmed_silence_frame = last_speech, last_silence
            stats.confirmed_start_frame, stats.confirmed_end_frame = cstart, cend
            stats.number_end_time_detected = ends
            stats.data_buf_start_frame = start
            if flags.get("max_time_out"):
                stats.max_time_out = True
            if flags.get("pre_end_cleared"):
                stats.pre_end_silence_detected = False
            if flags.get("sil_frame") or reset:
                stats.sil_frame = 0
            if reset:
                stats.frame_probs = []
                wd.cur_frame_state = FrameState.kFrameStateSil
                wd.voice_last_frame_count = wd.noise_last_frame_count = wd.hydre_frame_count = 0
            wd.win_state, wd.win_sum, wd.cur_win_pos = win, ws, pos
            wd.pre_frame_state = FrameState.kFrameStateSpeech if pre else FrameState.kFrameStateSil
            if dropped:  # FunASR cloned at every drop; one clone of the same samples here
                stats.data_buf_all = stats.data_buf_all[all_a:].clone()
                stats.decibel = stats.decibel[dropped:]
                stats.scores = stats.scores[:, dropped:, :].clone()
                stats.last_drop_frames = drop
            if moved:
                stats.data_buf = stats.data_buf_all[buf_a - all_a:]


__all__ = ["detect_frames", "hook"]
