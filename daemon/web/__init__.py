"""The dashboard: the daemon, its queue and every transcript in the browser.

`server` starts it (`spkd web`, or the child `spkd run` supervises) and imports only
the standard library; `app` is the Starlette application, `pages` what its pages
show, `security` the token, CSRF and headers, `upload` files into the inbox,
`metrics` /metrics. Search, the voice library and renaming are the rooms' own
functions (daemon.store.search, daemon.voices), called as `spkd search`, `spkd voices` and
`spkd speakers` call them; none of them loads a model in this process.
Templates and static files ship in the package (daemon/web/templates, static).
"""
