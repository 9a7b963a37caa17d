"""spkd: a filesystem-watching daemon that turns dropped audio into speaker-labelled transcripts."""

__version__ = "0.1.0"
