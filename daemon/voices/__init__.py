"""The voice library: people enrolled by name, recognised in every recording.

- daemon.voices.matching: which voice, if any, names each speaker (pure: the samples
  are arguments); a name's rule; an enrolment's sample.
- daemon.voices.library: enrolling recordings, listing and removing voices, through
  the store.

Elsewhere, by what they need: the voices folder that makes the library follow
`paths.voices/<Name>/` is daemon.intake.voice_folder (it queues enrolment jobs, as
the watcher queues transcriptions); renaming and re-matching finished jobs is
daemon.jobs.rename (it re-renders their results). Nothing is re-exported here:
import the module you mean.
"""
