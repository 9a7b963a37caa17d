"""Errors that cross room boundaries, each with a stable `kind` stored in `jobs.error_kind`.

A *permanent* error fails a job at once (retrying cannot help: the audio is
undecodable, the sidecar is invalid); any other exception is *transient* and the
job is retried with backoff until its attempts are spent.
"""

from __future__ import annotations


class SpkdError(Exception):
    kind: str = "error"
    permanent: bool = False

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(SpkdError):
    """The configuration is invalid; start-up stops with this message."""

    kind = "config"
    permanent = True


class ModelsMissingError(SpkdError):
    """A configured model directory does not exist; the message names it and the fix."""

    kind = "models_missing"
    permanent = True


class AudioError(SpkdError):
    """The input cannot be turned into audio (undecodable, no audio stream, too short)."""

    kind = "bad_audio"
    permanent = True


class OptionsError(SpkdError):
    """A sidecar `<file>.spkd.json` is invalid."""

    kind = "bad_options"
    permanent = True


class DeviceError(SpkdError):
    """A device could not be initialised or ran out of memory."""

    kind = "device"
    permanent = False


class FetchError(SpkdError):
    """Downloading the real models failed (hub unreachable, incomplete download)."""

    kind = "models_fetch"
    permanent = True


class SearchQueryError(SpkdError):
    """A search query that cannot be searched for (empty once blanks are removed)."""

    kind = "bad_query"
    permanent = True


class DatabaseExtensionError(SpkdError):
    """The database lacks an extension spkd needs and this role may not create it;
    the message names the fix."""

    kind = "database_extension"
    permanent = True
