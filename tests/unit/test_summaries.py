"""Summaries, the parts without a database or a server (#30): the `summary` config
section and its privacy rule, the sidecar key, the prompt (numbered lines with times
and speakers), cutting a long transcript into parts and combining them (map-reduce),
reading the answer (JSON in its variants, anything else kept as text), and the
NAME.summary.md and NAME.json that come out of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon import writers
from daemon.config import from_dict
from daemon.errors import ConfigError, OptionsError, SummaryRefusedError
from daemon.options import validate
from daemon.summaries import answer, mapreduce, prompt
from daemon.summary_config import SummaryConfig, is_loopback_host
from daemon.transcript import Segment, Transcript
from daemon.writers.summary_doc import render_summary_markdown

LOCAL = {"endpoint": "http://127.0.0.1:8080/v1", "model": "smollm2"}


def meeting(count: int = 3, *, words: str = "the budget for next quarter") -> Transcript:
    """`count` sentences three seconds apart, two speakers taking turns, one of them named."""
    segments = tuple(Segment(start=725.48 + 3 * i, end=727.0 + 3 * i, speaker=1 + i % 2, text=f"{words} {i + 1}")
                     for i in range(count))
    return Transcript(segments=segments, audio_seconds=725.48 + 3 * count, speaker_names={1: "王总"})


def load_summary(raw: dict, tmp_path: Path) -> SummaryConfig:
    return from_dict({"summary": raw}, base_dir=tmp_path, env={}).summary


# --- configuration ----------------------------------------------------------------------

def test_summaries_are_off_without_an_endpoint(tmp_path: Path) -> None:
    settings = load_summary({}, tmp_path)
    assert not settings.enabled and not settings.wanted({}) and not settings.wanted({"summary": True})


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:8080/v1", "http://localhost:11434/v1", "http://[::1]:8000/v1",
                                      "http://127.5.0.1/v1", "https://LOCALHOST/v1"])
def test_a_loopback_endpoint_is_accepted_and_not_remote(tmp_path: Path, endpoint: str) -> None:
    settings = load_summary({"endpoint": endpoint, "model": "m"}, tmp_path)
    assert settings.enabled and not settings.remote
    assert settings.chat_url == endpoint.rstrip("/") + "/chat/completions"


@pytest.mark.parametrize("endpoint", ["http://10.0.0.5:8080/v1", "https://api.openai.com/v1", "http://0.0.0.0:8080/v1",
                                      "http://my-llm.lan:8080/v1", "http://[2001:db8::1]/v1"])
def test_a_remote_endpoint_is_refused_unless_allowed(tmp_path: Path, endpoint: str) -> None:
    with pytest.raises(ConfigError, match=r"summary\.endpoint: .* is not this machine.*allow_remote"):
        load_summary({"endpoint": endpoint, "model": "m"}, tmp_path)
    allowed = load_summary({"endpoint": endpoint, "model": "m", "allow_remote": True}, tmp_path)
    assert allowed.remote and allowed.enabled


def test_a_remote_endpoint_from_the_environment_is_refused_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not this machine"):
        from_dict({}, base_dir=tmp_path, env={"SPKD_SUMMARY_ENDPOINT": "http://192.168.1.9:11434/v1",
                                              "SPKD_SUMMARY_MODEL": "llama3.2"})


@pytest.mark.parametrize(("raw", "words"), [
    ({"endpoint": "ftp://127.0.0.1/v1", "model": "m"}, "summary.endpoint: must be an http"),
    ({"endpoint": "http://user:secret@127.0.0.1/v1", "model": "m"}, "must not hold credentials"),
    ({"endpoint": "http://127.0.0.1:port/v1", "model": "m"}, "summary.endpoint: not a URL"),
    ({"endpoint": "http://127.0.0.1:8080/v1"}, "summary.model: required"),
    ({"api_key_env": "sk-abc123"}, "summary.api_key_env: must be the NAME"),
    ({"context_tokens": 100}, "summary.context_tokens: must be from 1024"),
    ({"endpoint": "http://127.0.0.1/v1", "model": "m", "context_tokens": 1200, "max_answer_tokens": 1000},
     "must exceed summary.max_answer_tokens by at least 512"),
    ({"timeout_seconds": 0}, "summary.timeout_seconds"),
    ({"max_attempts": 0}, "summary.max_attempts"),
    ({"json_mode": "yes"}, "summary.json_mode: expected true or false"),
    ({"bogus": 1}, "summary.bogus: unknown key"),
])
def test_bad_summary_settings_name_the_key(tmp_path: Path, raw: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        load_summary(raw, tmp_path)


def test_an_api_key_written_where_its_name_belongs_is_not_repeated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_summary({"api_key_env": "sk-verysecret"}, tmp_path)
    assert "verysecret" not in str(caught.value)


def test_the_prompt_file_is_relative_to_the_config_and_the_chat_path_is_not_doubled(tmp_path: Path) -> None:
    settings = load_summary({**LOCAL, "endpoint": "http://127.0.0.1:8080/v1/chat/completions/",
                             "prompt": "prompts/meeting.txt"}, tmp_path)
    assert settings.prompt == (tmp_path / "prompts" / "meeting.txt").resolve()
    assert settings.chat_url == "http://127.0.0.1:8080/v1/chat/completions"


def test_loopback_is_decided_without_a_lookup() -> None:
    assert is_loopback_host("127.0.0.1") and is_loopback_host("::1") and is_loopback_host("::ffff:127.0.0.1")
    assert is_loopback_host("localhost") and is_loopback_host("api.localhost")
    assert not is_loopback_host("localhost.example.com") and not is_loopback_host("")
    assert not is_loopback_host("0.0.0.0")


def test_the_sidecar_says_whether_a_file_gets_a_summary(tmp_path: Path) -> None:
    assert validate({"summary": False}) == {"summary": False}
    with pytest.raises(OptionsError, match="summary: expected true or false"):
        validate({"summary": "no"})
    on = load_summary(LOCAL, tmp_path)
    assert on.wanted({}) and on.wanted({"summary": True}) and not on.wanted({"summary": False})
    asked_only = load_summary({**LOCAL, "automatic": False}, tmp_path)
    assert not asked_only.wanted({}) and asked_only.wanted({"summary": True})


# --- the prompt -------------------------------------------------------------------------

def test_each_segment_is_a_numbered_line_with_its_time_and_speaker() -> None:
    lines = prompt.segment_lines(meeting(2))
    assert lines == ["[1] 00:12:05 王总: the budget for next quarter 1",
                     "[2] 00:12:08 Speaker2: the budget for next quarter 2"]


def test_the_instructions_ask_for_the_format_and_the_language(tmp_path: Path) -> None:
    system = prompt.instructions(load_summary(LOCAL, tmp_path))
    assert prompt.BUILTIN_INSTRUCTIONS in system and '"action_items"' in system and '"segments"' in system
    assert "language the transcript is in" in system
    assert "Write the summary in English." in prompt.instructions(load_summary({**LOCAL, "language": "English"},
                                                                              tmp_path))


def test_a_prompt_file_replaces_the_built_in_instructions(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("List only the decisions, tersely.\n", encoding="utf-8")
    system = prompt.instructions(load_summary({**LOCAL, "prompt": "mine.txt"}, tmp_path))
    assert system.startswith("List only the decisions, tersely.") and prompt.BUILTIN_INSTRUCTIONS not in system
    assert prompt.FORMAT in system
    with pytest.raises(SummaryRefusedError, match="summary.prompt: cannot read"):
        prompt.instructions(load_summary({**LOCAL, "prompt": "missing.txt"}, tmp_path))


def test_tokens_are_estimated_on_the_high_side() -> None:
    assert prompt.estimate_tokens("") == 0
    assert prompt.estimate_tokens("abcdef") == 2
    assert prompt.estimate_tokens("预算草案") == 8
    assert prompt.estimate_tokens(prompt.fit("预算" * 100, 21)) <= 21


def test_lines_that_fit_go_in_one_part() -> None:
    lines = prompt.segment_lines(meeting(5))
    parts = prompt.split_parts(lines, budget=10_000)
    assert [(p.first, p.last) for p in parts] == [(1, 5)] and parts[0].lines == tuple(lines)


def test_a_long_transcript_is_cut_into_consecutive_parts_that_fit() -> None:
    lines = prompt.segment_lines(meeting(40))
    budget = 60
    parts = prompt.split_parts(lines, budget)
    assert len(parts) > 1
    assert parts[0].first == 1 and parts[-1].last == 40
    assert all(a.last + 1 == b.first for a, b in zip(parts, parts[1:]))  # consecutive, nothing left out
    assert [line for p in parts for line in p.lines] == lines
    assert all(sum(prompt.estimate_tokens(line) + 1 for line in p.lines) <= budget for p in parts)


def test_a_line_longer_than_a_part_is_cut_to_fit() -> None:
    long = prompt.segment_lines(meeting(1, words="预算" * 500))
    parts = prompt.split_parts(long, budget=50)
    assert len(parts) == 1 and parts[0].lines[0].endswith("…")
    assert prompt.estimate_tokens(parts[0].lines[0]) + 1 <= 50


def test_reduce_groups_take_at_least_two_so_every_round_halves() -> None:
    texts = ["x" * 300] * 7  # each 100 tokens: more than half the budget
    groups = mapreduce.reduce_groups(texts, budget=150)
    assert sorted(i for g in groups for i in g) == list(range(7))
    assert all(len(g) >= 2 for g in groups) and len(groups) <= 3


# --- map-reduce -------------------------------------------------------------------------

ANSWER = json.dumps({"overview": [{"text": "Budget talk.", "segments": [1, 2]}],
                     "decisions": [{"text": "Keep the budget.", "segments": [3]}],
                     "action_items": [{"who": "王总", "what": "Send the draft", "due": "Monday", "segments": [2]}],
                     "open_questions": []})


def test_a_transcript_that_fits_is_summarised_in_one_request(tmp_path: Path) -> None:
    asked = []

    def chat(messages):
        asked.append(messages)
        return ANSWER

    summary = mapreduce.make_summary(load_summary(LOCAL, tmp_path), meeting(3), chat)
    assert len(asked) == 1 and summary["parts"] == 1
    system, user = asked[0]
    assert system["role"] == "system" and user["role"] == "user"
    assert "[3] 00:12:11 王总: the budget for next quarter 3" in user["content"]
    assert summary["decisions"][0]["moments"] == [{"segment": 3, "start": 731.48, "speaker": "王总"}]


def test_a_long_transcript_is_mapped_then_reduced_keeping_the_whole_transcript_s_numbers(tmp_path: Path) -> None:
    settings = load_summary({**LOCAL, "context_tokens": 2048, "max_answer_tokens": 512}, tmp_path)
    transcript = meeting(300, words="预算草案下周一之前发给我")
    asked = []

    def chat(messages):
        asked.append(messages)
        content = messages[-1]["content"]
        if content.startswith("This is part") or content.startswith("Transcript"):
            first = int(content.split("lines ")[1].split(" ")[0])
            return json.dumps({"overview": [{"text": f"part from {first}", "segments": [first]}], "decisions": [],
                               "action_items": [], "open_questions": []})
        cited = sorted({int(n) for n in __import__("re").findall(r'"segments":\[(\d+)', content)})
        return json.dumps({"overview": [{"text": "combined", "segments": cited}]})

    summary = mapreduce.make_summary(settings, transcript, chat)
    maps = [m for m in asked if m[-1]["content"].startswith("This is part")]
    assert summary["parts"] == len(maps) > 1
    assert all(prompt.estimate_tokens(m[0]["content"]) + prompt.estimate_tokens(m[1]["content"])
               <= settings.context_tokens - settings.max_answer_tokens for m in asked)
    # the map parts cover the whole transcript, and the combination cites the first line of each
    assert summary["overview"][0]["text"] == "combined"
    assert summary["overview"][0]["segments"][0] == 1 and summary["overview"][0]["segments"][-1] > 150
    assert all(prompt.COMBINE in m[0]["content"] for m in asked if m not in maps)


def test_a_part_that_ignored_the_format_is_combined_as_its_text(tmp_path: Path) -> None:
    settings = load_summary({**LOCAL, "context_tokens": 1536, "max_answer_tokens": 512}, tmp_path)
    asked = []

    def chat(messages):
        asked.append(messages)
        return "Just prose about the budget."

    summary = mapreduce.make_summary(settings, meeting(200), chat)
    assert summary["format"] == "text" and summary["text"] == "Just prose about the budget."
    assert "Just prose about the budget." in asked[-1][-1]["content"]


# --- the answer -------------------------------------------------------------------------

def test_the_json_asked_for_is_read_with_moments() -> None:
    summary = answer.parse_answer(ANSWER, meeting(3))
    assert summary["format"] == "json" and summary["text"] is None
    assert summary["action_items"] == [{"who": "王总", "what": "Send the draft", "due": "Monday", "segments": [2],
                                        "moments": [{"segment": 2, "start": 728.48, "speaker": "Speaker2"}]}]
    assert summary["open_questions"] == []


def test_json_in_a_fence_with_other_names_and_loose_numbers_is_read() -> None:
    text = ("Here is the summary:\n```json\n"
            '{"Summary": "We talked budget [2].", "Decisions made": ["Keep it"],'
            ' "actionItems": [{"owner": "王总", "task": "send", "deadline": null, "refs": "1, 3-4, 99"}],'
            ' "Open Questions": [{"question": "When?", "segment": "2"}]}\n```\nHope it helps.')
    summary = answer.parse_answer(text, meeting(4))
    assert summary["format"] == "json"
    assert summary["overview"][0]["text"] == "We talked budget [2]." and summary["overview"][0]["segments"] == [2]
    assert summary["decisions"] == [{"text": "Keep it", "segments": [], "moments": []}]
    assert summary["action_items"][0]["who"] == "王总" and summary["action_items"][0]["segments"] == [1, 3, 4]
    assert summary["open_questions"][0]["segments"] == [2]


@pytest.mark.parametrize("text", [
    "The meeting was about the budget. Nothing was decided.",
    '{"answer": "a JSON object of another shape"}',
    '{"overview": [{"text": "cut off in the midd',
    "[1, 2, 3]",
    "null",
])
def test_an_answer_that_ignores_the_format_is_kept_as_text(text: str) -> None:
    summary = answer.parse_answer(text, meeting(3))
    assert summary == {"schema": answer.SCHEMA, "format": "text", "overview": [], "decisions": [],
                       "action_items": [], "open_questions": [], "text": text}


def test_an_answer_cut_off_by_max_tokens_keeps_its_whole_points() -> None:
    # a small model held to the schema may run to max_tokens: what it finished is kept
    text = ('{"overview": [{"text": "预算 {a} \\"quoted\\"", "segments": [1]}], "decisions": [{"text": "d1", '
            '"segments": [2]}, {"text": "d2, cut off in the mi')
    summary = answer.parse_answer(text, meeting(3))
    assert summary["format"] == "json" and summary["text"] is None
    assert [p["text"] for p in summary["overview"]] == ['预算 {a} "quoted"']
    assert [p["text"] for p in summary["decisions"]] == ["d1"]
    assert summary["action_items"] == [] and summary["open_questions"] == []


def test_a_line_break_left_raw_inside_a_string_is_still_json() -> None:
    # what SmolLM2 under llama.cpp's JSON grammar answered for one meeting: the grammar lets
    # a raw line break into a string, which strict JSON forbids
    text = ('{ "overview": [{"text": "...", "segments": [1, 2]}], "decisions": [{"text": "时间。}\n{ ",'
            '"segments": [2]} ] ,"action_items" : [], "open_questions" : [{"text": "a\tb", "segments": [3]}] }')
    assert "\n" in text and "\t" in text  # raw characters, not escapes
    summary = answer.parse_answer(text, meeting(3))
    assert summary["format"] == "json" and summary["text"] is None
    assert [p["text"] for p in summary["decisions"]] == ["时间。} {"]  # its white space made one space
    assert [p["segments"] for p in summary["open_questions"]] == [[3]]


def test_invented_segment_numbers_and_empty_points_are_dropped() -> None:
    text = json.dumps({"overview": [{"text": "x", "segments": [0, -1, 3, 3, 12, True, "abc", 2.0]}, {"text": ""},
                                    {"segments": [1]}, 7], "decisions": None})
    summary = answer.parse_answer(text, meeting(3))
    assert summary["overview"] == [{"text": "x", "segments": [2, 3], "moments": [
        {"segment": 2, "start": 728.48, "speaker": "Speaker2"}, {"segment": 3, "start": 731.48, "speaker": "王总"}]}]
    assert summary["decisions"] == []


# --- the files ----------------------------------------------------------------------------

def test_the_summary_file_links_each_point_to_its_moments() -> None:
    summary = answer.parse_answer(ANSWER, meeting(3))
    text = render_summary_markdown(summary, title="meeting.m4a", page="meeting.html")
    assert text.startswith("# Summary: meeting\\.m4a\n") or text.startswith("# Summary: meeting.m4a\n")
    assert "## Overview\n\n- Budget talk. [00:12:05](meeting.html#t=725.480) [00:12:08](meeting.html#t=728.480)" in text
    assert "## Action items\n\n- **王总**: Send the draft (due: Monday) [00:12:08](meeting.html#t=728.480)" in text
    assert "## Open questions" not in text  # an empty section is left out


def test_a_page_name_with_spaces_still_makes_links_and_model_text_never_becomes_markup() -> None:
    summary = answer.parse_answer(json.dumps({"overview": [{"text": "*bold* [x](http://evil)", "segments": [1]}]}),
                                  meeting(1))
    text = render_summary_markdown(summary, title="a b.m4a", page="a (b).html")
    assert "](a%20%28b%29.html#t=725.480)" in text and "\\*bold\\*" in text and "\\[x\\](http://evil)" in text


def test_a_text_answer_is_kept_whole_in_the_file() -> None:
    text = render_summary_markdown(answer.text_summary("## Notes\n\n- budget\n"), title="m.wav", page="m.html")
    assert text.endswith("## Summary\n\n## Notes\n\n- budget\n")


def test_the_json_carries_the_summary_last_and_reads_back_as_the_same_transcript() -> None:
    transcript = meeting(3)
    summary = {**answer.parse_answer(ANSWER, transcript), "model": "m", "transcript_version": 1, "parts": 1}
    doc = json.loads(writers.render("json", transcript, summary=summary))
    assert list(doc)[-1] == "summary" and doc["summary"] == summary
    assert writers.parse_json(json.dumps(doc)) == writers.parse_json(writers.render("json", transcript))
    assert "summary" not in json.loads(writers.render("json", transcript))


# --- spkd doctor ----------------------------------------------------------------------------

def doctor_lines(settings_raw: dict, tmp_path: Path, env: dict | None = None) -> list[dict]:
    from daemon.service.doctor import Report, check_summary

    report = Report()
    check_summary(from_dict({"summary": settings_raw}, base_dir=tmp_path, env={}), report, env or {})
    return report.checks


def test_doctor_shows_the_endpoint_and_whether_it_is_remote(tmp_path: Path) -> None:
    assert doctor_lines({}, tmp_path) == [{"check": "summary", "ok": True, "detail": "off (no summary.endpoint)"}]
    local = doctor_lines(LOCAL, tmp_path)
    assert len(local) == 1 and "on this machine" in local[0]["detail"] and "warning" not in local[0]
    remote = doctor_lines({"endpoint": "https://llm.example.com/v1", "model": "m", "allow_remote": True,
                           "api_key_env": "LLM_KEY", "prompt": "nope.txt"}, tmp_path)
    assert remote[0]["warning"] and "ANOTHER machine" in remote[0]["detail"]
    assert any("nope.txt cannot be read" in c["detail"] and not c["ok"] for c in remote)
    assert any("LLM_KEY is not set" in c["detail"] for c in remote)
