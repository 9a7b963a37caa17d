"""`spkd voices …` and `spkd speakers …`: parsing and printing for the voice library
(daemon.voices does the work; daemon.jobs.rename for `rematch` and `speakers`).
`list`, `remove`, `rename`, `rematch` and `speakers` never load a model; `add` and `match` load
the configured models in this process (like `spkd transcribe`), so they work whether
or not the daemon runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from daemon.cli.common import add_command, add_wide, job_id, load_config, opened_store, print_json, print_table
from daemon.errors import ExitCode, JobRefusedError, NoSuchJobError, VoiceError

__all__ = ["register"]


def _config(args: argparse.Namespace) -> Any:
    """The config (the log is quiet below warnings, as for every one-shot command:
    daemon.cli.common.quiet_logging; these commands print what they did)."""
    return load_config(args)


def _engine(config: Any, device: str | None) -> Any:
    from daemon.cli.oneshot import load_engine

    return load_engine(config, device, lambda message: print(message, file=sys.stderr, flush=True))


def cmd_voices_add(args: argparse.Namespace) -> int:
    from daemon.voices import library
    from daemon.voices.matching import check_name

    config = _config(args)
    check_name(args.name)  # refuse a bad name before loading any model
    with opened_store(config) as store:
        done = library.enrol(store, args.name, [Path(f) for f in args.files], engine=_engine(config, args.device))
    if args.json:
        print_json([vars(d) for d in done])
    else:
        for d in done:
            print(f"{d.name}: enrolled {d.source} ({d.speech_seconds:.1f} s of speech, {d.model}; "
                  f"voice {d.voice}, sample {d.sample})")
    return ExitCode.OK


def cmd_voices_list(args: argparse.Namespace) -> int:
    from daemon.voices import library

    config = _config(args)
    with opened_store(config) as store:
        rows = library.list_voices(config, store)
    if args.json:
        print_json([vars(r) for r in rows])
    else:
        print_table(("id", "name", "samples", "speech_s", "models", "from", "created_at"),
                     [(r.id, r.name, r.samples, r.speech_seconds, ", ".join(r.models), ", ".join(r.origins),
                       r.created_at) for r in rows], wide=args.wide)
    return ExitCode.OK


def cmd_voices_remove(args: argparse.Namespace) -> int:
    from daemon.voices import library

    config = _config(args)
    with opened_store(config) as store:
        count = library.remove(config, store, args.name)
    print(f"removed voice {args.name} ({count} sample(s))")
    return ExitCode.OK


def cmd_voices_rename(args: argparse.Namespace) -> int:
    from daemon.jobs import voice_rename

    config = _config(args)
    with opened_store(config) as store:
        done = voice_rename.rename_voice(config, store, args.name, args.new_name)
    for reason in done.skipped:
        print(f"spkd voices rename: not renamed in {reason}", file=sys.stderr)
    print(f"voice {done.name} is now {done.new_name}; re-rendered {len(done.jobs)} job(s)"
          + (f": {', '.join(map(str, done.jobs))}" if done.jobs else ""))
    return ExitCode.OK


def cmd_voices_match(args: argparse.Namespace) -> int:
    from daemon.voices import matching

    config = _config(args)
    engine = _engine(config, args.device)
    transcript = engine.transcribe(Path(args.file), source_name=Path(args.file).name)
    with opened_store(config) as store:
        samples = store.voice_samples_of()
    scored = matching.scores_for(transcript, samples, threshold=config.speakers.match_threshold,
                                 margin=config.speakers.match_margin)
    talk = {s.speaker: s.talk_seconds for s in transcript.speakers}
    report = [{"speaker": f"Speaker{k}", "talk_seconds": talk.get(k, 0.0),
               "name": r.chosen.name if r.chosen else None, "reason": r.reason,
               "scores": [{"name": c.name, "voice": c.voice, "score": c.score} for c in r.candidates]}
              for k, r in sorted(scored.items())]
    if args.json:
        print_json(report)
        return ExitCode.OK
    print(f"threshold {config.speakers.match_threshold:g}, margin {config.speakers.match_margin:g} "
          "(speakers.match_threshold, speakers.match_margin)")
    if not transcript.speaker_centroids:
        print("no speaker centroids in this recording (no speaker model, or no speech)")
    for entry in report:
        scores = ", ".join(f"{c['name']} {c['score']:.3f}" for c in entry["scores"][:5]) or "no voices"
        print(f"{entry['speaker']} ({entry['talk_seconds']:.1f} s): {entry['name'] or 'unnamed'} — "
              f"{entry['reason']}; scores: {scores}")
    return ExitCode.OK


def cmd_voices_rematch(args: argparse.Namespace) -> int:
    from daemon.jobs import rename
    from daemon.store import search

    config = _config(args)
    since = search.parse_date_bound(args.since, end=False) if args.since else None
    with opened_store(config) as store:
        changed = rename.rematch(config, store, since=since)
    print(f"{len(changed)} job(s) re-rendered" + (f": {', '.join(map(str, changed))}" if changed else ""))
    return ExitCode.OK


def _pairs(items: list[str]) -> dict[str, str]:
    names: dict[str, str] = {}
    for item in items:
        label, sep, name = item.partition("=")
        if not sep or not label.strip():
            raise VoiceError(f"{item!r}: expected LABEL=NAME (for example Speaker2=王总)")
        names[label.strip()] = name
    return names


def cmd_speakers(args: argparse.Namespace) -> int:
    from daemon.jobs import outputs, rename

    config = _config(args)
    with opened_store(config) as store:
        job = store.job(args.job)
        if job is None:
            raise NoSuchJobError(f"no job {args.job}")
        if args.names:
            result = rename.rename_speakers(config, store, args.job, _pairs(args.names), enrol_voices=args.enrol)
            print(f"job {args.job}: " + ", ".join(f"{k} -> {v}" for k, v in result.renamed.items())
                  + f"; re-rendered job(s) {', '.join(map(str, result.jobs))}"
                  + (f"; enrolled {', '.join(result.enrolled)}" if result.enrolled else ""), file=sys.stderr)
        elif args.enrol:
            raise VoiceError("--enrol goes with LABEL=NAME: the name to enrol the speaker's voice under")
        transcript = outputs.load_transcript(config, args.job)
    if transcript is None:
        if job.state != "done":
            raise JobRefusedError(f"job {args.job} is {job.state}, not done: it has no speakers yet")
        raise VoiceError(f"job {args.job} has no stored transcript (swept by retention, or removed)")
    rows = [{"label": s.label, "shown_as": s.display, "name": s.name, "talk_seconds": s.talk_seconds,
             "segments": s.segments, "voice": s.match.voice if s.match else None,
             "score": s.match.score if s.match else None, "renamed": bool(s.match and s.match.renamed)}
            for s in transcript.speakers]
    if args.json:
        print_json(rows)
    else:
        print_table(("label", "shown_as", "talk_s", "segments", "voice", "score", "renamed"),
                     [(r["label"], r["shown_as"], r["talk_seconds"], r["segments"], r["voice"], r["score"],
                       "yes" if r["renamed"] else "") for r in rows], wide=args.wide)
    return ExitCode.OK


def register(subparsers: Any) -> None:
    """Add `voices` and `speakers` to spkd's subcommands (`subparsers` from build_parser)."""
    text = "the voice library: people recognised by name in every recording"
    parent = subparsers.add_parser("voices", help=text, description=text)
    sub = parent.add_subparsers(dest="voices_command", metavar="COMMAND")
    sub.required = True

    p = add_command(sub, "add", cmd_voices_add,
                    "enrol NAME from recordings of that person alone (>= 10 s of speech each); "
                    "adding to a known name adds a sample")
    p.add_argument("name", metavar="NAME")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--device", "-d", metavar="DEVICE", help="where to run the models (default: workers.device)")
    p.add_argument("--json", action="store_true")
    p = add_command(sub, "list", cmd_voices_list, "the enrolled voices")
    p.add_argument("--json", action="store_true")
    add_wide(p)
    p = add_command(sub, "remove", cmd_voices_remove,
                    "remove a voice with all its samples (its folder under paths.voices "
                    "moves to state/removed-voices/)")
    p.add_argument("name", metavar="NAME")
    p = add_command(sub, "rename", cmd_voices_rename,
                    "rename a voice (its folder under paths.voices with it) and re-render every job whose "
                    "speakers it named")
    p.add_argument("name", metavar="NAME")
    p.add_argument("new_name", metavar="NEW_NAME")
    p = add_command(sub, "match", cmd_voices_match,
                    "which voice each speaker of FILE would get, with the scores (for tuning "
                    "speakers.match_threshold and speakers.match_margin)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--device", "-d", metavar="DEVICE", help="where to run the models (default: workers.device)")
    p.add_argument("--json", action="store_true")
    p = add_command(sub, "rematch", cmd_voices_rematch,
                    "name the speakers of finished jobs after the library as it is now "
                    "and re-render those whose names change (names people gave stay)")
    p.add_argument("--since", metavar="DATE", help="only jobs finished on or after DATE")

    text = "a finished job's speakers: list them, or rename them (LABEL=NAME) and re-render every output"
    p = subparsers.add_parser("speakers", help=text, description=text)
    p.add_argument("--config", "-c", default=argparse.SUPPRESS, help="config file")
    p.add_argument("job", type=job_id, metavar="JOB_ID")
    p.add_argument("names", nargs="*", metavar="LABEL=NAME",
                   help="a speaker as the outputs show it (Speaker2, or a wrong name) = its name")
    p.add_argument("--enrol", action="store_true", help="also add each renamed speaker's voice to the library")
    p.add_argument("--json", action="store_true")
    add_wide(p)
    p.set_defaults(func=cmd_speakers)
